"""User code named in a YAML (``call: mypkg.filters:drop_small``, ``"mypkg.x:MyStage": {...}``).

Loading a YAML never imports or runs anything by itself: a ``module:Name`` entry is imported
only when its module is on the allow-list of the run, given as ``--allow-code mypkg,mymod``
(``vidflow run`` / ``check``), ``allow_code=[...]`` (``Pipeline.from_yaml``) or the environment
variable ``VIDFLOW_ALLOW_CODE=mypkg,mymod``. An entry allows that module and everything under
it (``mypkg`` allows ``mypkg.filters``). The module is then imported like a Python import, from
``sys.path`` and, after it, the YAML's own folder (so ``call: mymod:fn`` next to the YAML works).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import _lazy
from .errors import ConfigError

__all__ = ["ENV", "allow_list", "is_allowed", "import_user"]

ENV = "VIDFLOW_ALLOW_CODE"
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def allow_list(allow_code: Iterable[str] | str | None = None) -> tuple[str, ...]:
    """The allowed modules: ``allow_code`` (a list or a comma-separated string) plus
    ``$VIDFLOW_ALLOW_CODE``. ``ConfigError`` for an entry that is not a module name."""
    items: list[str] = []
    for chunk in ([allow_code] if isinstance(allow_code, str) else list(allow_code or [])) + [os.environ.get(ENV, "")]:
        items += [x.strip() for x in str(chunk).split(",") if x.strip()]
    for x in items:
        if not _MODULE.fullmatch(x):
            raise ConfigError(f"expected module names separated by commas (mypkg,mymod.sub), got {x!r}",
                              "--allow-code")
    return tuple(dict.fromkeys(items))


def is_allowed(module: str, allowed: Iterable[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


def import_user(spec: str, path: str, *, allowed: tuple[str, ...], base: str | None) -> Any:
    """Import ``module:Name`` if the allow-list permits it; ``ConfigError`` at ``path`` otherwise.
    Nothing is imported for a module that is not allowed."""
    try:
        mod, _ = _lazy.split(spec)
    except ValueError as e:
        raise ConfigError(str(e), path) from None
    where = "sys.path" + (f" and then the YAML's folder {base}" if base else "")
    if not is_allowed(mod, allowed):
        top = mod.split(".")[0]
        raise ConfigError(f"{spec!r} is user code, and a YAML runs none unless the run allows it: pass "
                          f"--allow-code {top} (or set {ENV}={top}; Python: allow_code=[{top!r}]); it is then "
                          f"imported like `from {mod} import {spec.partition(':')[2].split('.')[0]}`, "
                          f"from {where}", path)
    top = mod.split(".")[0]
    if base and importlib.util.find_spec(top) is None and base not in sys.path:
        if (Path(base) / f"{top}.py").is_file() or (Path(base) / top).is_dir():
            sys.path.append(base)
    try:
        return _lazy.resolve(spec)
    except ModuleNotFoundError as e:
        raise ConfigError(f"cannot import {spec!r}: {e} (looked in {where}; for a module in another folder, "
                          f"add that folder to PYTHONPATH, e.g. PYTHONPATH=/path/to/folder vidflow run ...)", path) from e
    except AttributeError as e:
        raise ConfigError(f"cannot import {spec!r}: {e}", path) from e
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing: say so, with its error
        raise ConfigError(f"importing {spec!r} failed: {type(e).__name__}: {e}", path) from e
