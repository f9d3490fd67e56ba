"""Operations: an HTTP server beside a running pipeline (optional extra ``vidflow[serve]``).

One entry point::

    from vidflow import serve
    server = serve.start(pipeline, http="127.0.0.1:8080", token=None, control=True)
    pipeline.run()          # /metrics, /livez /readyz /startupz, /api/v1/..., /view meanwhile
    server.stop()

``vidflow serve pipeline.yaml [--http HOST:PORT] [--token-file F] [--no-control]`` does the same
from the command line. Modules: ``app`` (routes, server thread), ``metrics`` (Prometheus),
``health`` (rates, stalled vs blocked, probes), ``control`` (sources API, DeepStream's stream
API), ``view`` (live page), ``auth`` (bind, token, limits).
"""

from __future__ import annotations

from typing import Any

__all__ = ["start", "Server"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        try:
            from . import app
        except ImportError as e:
            raise ImportError(f"vidflow.serve needs the 'serve' extra: pip install 'vidflow[serve]' ({e})") from e
        return getattr(app, name)
    raise AttributeError(f"module 'vidflow.serve' has no attribute {name!r}")
