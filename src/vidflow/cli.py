"""The ``vidflow`` command line: ``run``, ``serve``, ``check``, ``inspect``, ``demo``, ``info``, ``bench``,
``gallery`` (also ``python -m vidflow``). Exit codes: 0 done, 1 a source / stage / sink failed,
2 a usage or config error (one line on stderr, no traceback), 130 interrupted."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence

from .errors import ConfigError, SourceError, VidflowError, redact_uri

__all__ = ["main"]


class _Progress:
    """Prints per-source fps to stderr: rewritten in place on a terminal, a line every few
    seconds otherwise."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0

    def __call__(self, summary) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < 5.0:
            return
        self.last = now
        line = summary.progress_line()
        if self.tty:
            self.stream.write("\r\033[K" + line[:200])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    progress = _Progress() if not args.quiet else None
    if args.torch_threads is not None:
        args.set = [*(args.set or []), f"torch_threads={args.torch_threads}"]
    try:
        pipe = Pipeline.from_yaml(args.pipeline, args.set or None, progress=progress)
    except ConfigError as e:
        print(f"vidflow: config error: {redact_uri(e)}", file=sys.stderr)
        return 2
    code = 0
    try:
        pipe.run()
    except KeyboardInterrupt:
        code = 130
    except SourceError as e:
        print(f"vidflow: {redact_uri(e)}", file=sys.stderr)
        code = 1
    except VidflowError as e:
        print(f"vidflow: error: {redact_uri(e)}", file=sys.stderr)
        code = 1
    finally:
        if progress is not None:
            progress.done()
    print(pipe.summary.table())
    return code


def _cmd_serve(args: argparse.Namespace) -> int:
    """``vidflow serve``: ``run`` with the HTTP server of ``vidflow.serve`` beside it; SIGTERM stops
    the pipeline cleanly (sinks closed, summary printed)."""
    import signal

    from .pipeline import Pipeline

    try:
        from . import serve
        serve.start   # noqa: B018 - fails here, clearly, without the 'serve' extra
    except ImportError as e:
        print(f"vidflow: {e}", file=sys.stderr)
        return 2
    try:
        pipe = Pipeline.from_yaml(args.pipeline, args.set or None)
    except ConfigError as e:
        print(f"vidflow: config error: {redact_uri(e)}", file=sys.stderr)
        return 2
    try:
        server = serve.start(pipe, args.http, token_file=args.token_file, control=not args.no_control)
    except ValueError as e:
        print(f"vidflow: serve: {redact_uri(e)}", file=sys.stderr)
        return 2
    print(f"vidflow: serving {server.url}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: pipe.stop())
    code = 0
    try:
        pipe.run()
    except KeyboardInterrupt:
        code = 130
    except VidflowError as e:
        print(f"vidflow: error: {redact_uri(e)}", file=sys.stderr)
        code = 1
    finally:
        server.stop()
    print(pipe.summary.table())
    return code


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .device import resolve_device

    try:
        resolve_device(args.device)
    except ValueError as e:
        print(f"vidflow demo: {e}", file=sys.stderr)
        return 2
    try:
        run_demo(args.out, device=args.device, streams=args.streams, frames=args.frames,
                 torch_threads=args.torch_threads)
    except ValueError as e:
        print(f"vidflow demo: {e}", file=sys.stderr)
        return 2
    return 0


def info() -> dict:
    """Facts about this machine as vidflow sees it: device, decoders, encoders, versions."""
    import torch

    out: dict = {"vidflow": __import__("vidflow").__version__, "python": platform.python_version(),
                 "torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        out["cuda"] = torch.version.cuda
    try:
        import av

        out["pyav"] = av.__version__
        out["ffmpeg"] = ".".join(map(str, av.library_versions.get("libavcodec", ())))
        out["libx264"] = _has_encoder("libx264")
    except ImportError:
        out["pyav"] = None
    try:
        from .sources.decode import nvdec_info

        out["nvdec"] = nvdec_info()
    except ImportError as e:
        out["nvdec"] = {"available": False, "reason": str(e)}
    try:
        from .sinks.video import nvenc_available

        out["nvenc"] = nvenc_available()
    except ImportError:
        out["nvenc"] = None
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:
        out["torchvision"] = None
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
        out["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        out["onnxruntime"] = None
    return out


def _has_encoder(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False


def _yes(v: object) -> str:
    return "yes" if v is True else "no" if v in (False, None) else str(v)


def info_text(facts: dict) -> str:
    """``vidflow info`` as a short table (``--json`` prints the dict)."""
    nvdec = facts.get("nvdec") or {}
    if isinstance(nvdec, dict):
        codecs = ", ".join(sorted(nvdec.get("codecs") or {}))
        nvdec_s = (f"yes ({codecs})" if codecs else "yes") if nvdec.get("available") else \
            f"no ({nvdec.get('reason') or 'not available'})"
    else:
        nvdec_s = str(nvdec)
    gpus = facts.get("gpus") or []
    rows = [
        ("vidflow", facts.get("vidflow")),
        ("python", facts.get("python")),
        ("torch", f"{facts.get('torch')}" + (f" (CUDA {facts.get('cuda')})" if facts.get("cuda") else "")),
        ("device", f"cuda ({', '.join(gpus)})" if facts.get("cuda_available") else "cpu (no CUDA device)"),
        ("decode", f"FFmpeg via PyAV {facts.get('pyav')} (libavcodec {facts.get('ffmpeg')})"
                   if facts.get("pyav") else "PyAV not installed: pip install av"),
        ("NVDEC", nvdec_s),
        ("encode", f"libx264 {_yes(facts.get('libx264'))}, NVENC {_yes(facts.get('nvenc'))}"),
        ("onnxruntime", f"{facts.get('onnxruntime')} ({', '.join(facts.get('onnxruntime_providers') or [])})"
                        if facts.get("onnxruntime") else "not installed: pip install 'vidflow[onnx]'"),
        ("torchvision", facts.get("torchvision") or "not installed"),
    ]
    return "\n".join(f"{k:12s} {v}" for k, v in rows)


def _cmd_info(args: argparse.Namespace) -> int:
    facts = info()
    if args.json:
        print(json.dumps(facts, indent=2, default=str))
    else:
        print(info_text(facts))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    """Validate a pipeline YAML without running it and print its parts."""
    import inspect as _inspect

    from ._kinddoc import describe_parts
    from .config import build_parts, load_config
    from .pipeline import Pipeline

    try:
        parts = build_parts(load_config(args.pipeline, args.set or None), allow_code=args.allow_code)
        parts.kwargs(_inspect.signature(Pipeline).parameters)
    except ConfigError as e:
        print(f"vidflow: config error: {redact_uri(e)}", file=sys.stderr)
        return 2
    print(redact_uri(describe_parts(parts)))
    print(f"{args.pipeline}: OK ({len(parts.sources)} source(s), {len(parts.stages)} stage(s), "
          f"{len(parts.sinks)} sink(s))")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    """List the YAML kinds, or print one kind's keys, types, defaults and docs."""
    from ._kinddoc import describe_kind, find_kind, kinds_markdown, list_kinds

    if args.markdown:
        sys.stdout.write(kinds_markdown())
        return 0
    if not args.kind:
        print(list_kinds())
        return 0
    hits = find_kind(args.kind)
    if not hits:
        print(f"vidflow inspect: unknown kind {args.kind!r}; `vidflow inspect` lists them", file=sys.stderr)
        return 2
    print("\n\n".join(describe_kind(sec, kind) for sec, kind in hits))
    return 0


def _cmd_bench(args: argparse.Namespace, rest: Sequence[str]) -> int:
    # torch.profiler's Kineto logs every profiler start/stop on stderr ("USDT: ... profiler_start");
    # level 6 keeps it quiet (read when the profiler first starts, so setting it here is in time)
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from .bench import main as bench_main

    rc = int(bench_main(list(rest)) or 0)
    if _torch_cuda_used():
        # Every figure is written and flushed by now. With CUPTI kept set up between the copy
        # windows (see bench._run), the interpreter's exit sometimes aborts in native static
        # destructors ("terminate called without an active exception", 1 of 7 GPU runs),
        # turning a complete run into exit code 134: leave without them.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _torch_cuda_used() -> bool:
    """Whether this process initialised CUDA through torch (without initialising it)."""
    mod = sys.modules.get("torch")
    return bool(mod is not None and mod.cuda.is_initialized())


def _cmd_gallery(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from .gallery_cli import main as gallery_main

    return int(gallery_main(list(rest)) or 0)


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="vidflow", description="GPU video analytics pipelines in Python.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("--version", action="version", version=f"vidflow {__version__}")
    allow = dict(metavar="MODULES", default=None,
                 help="comma-separated modules whose `module:Name` / `call:` entries the YAML may import "
                      "(also $VIDFLOW_ALLOW_CODE); a YAML runs no code otherwise")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a pipeline described in YAML",
                       description="Run PIPELINE.yaml to the end, printing per-source fps and a summary.")
    r.add_argument("pipeline", help="the pipeline YAML file")
    r.add_argument("--set", action="append", metavar="PATH=VALUE",
                   help="override a YAML value, e.g. --set muxer.batch_size=16 --set detect.conf=0.4 (repeatable)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    r.add_argument("--torch-threads", type=int, default=None, metavar="N",
                   help="torch's CPU threads (= --set torch_threads=N; default: the cores this process may use, less one)")
    r.add_argument("--allow-code", **allow)
    r.set_defaults(func=_cmd_run)

    c = sub.add_parser("check", help="validate a pipeline YAML without running it; print its parts",
                       description="Check PIPELINE.yaml as `run` would (kinds, key types, model files, output "
                                   "folders, extras) without starting anything; print each part with its "
                                   "arguments and capabilities.")
    c.add_argument("pipeline", help="the pipeline YAML file")
    c.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a YAML value (repeatable)")
    c.add_argument("--allow-code", **allow)
    c.set_defaults(func=_cmd_check)

    k = sub.add_parser("inspect", help="list the YAML kinds, or show one kind's keys, types and defaults",
                       description="Without KIND: every kind by section. With KIND (a kind like `detect`, a class "
                                   "like `Detector`, or `muxer`): its keys, types, defaults, docs, capabilities.")
    k.add_argument("kind", nargs="?", help="a kind name")
    k.add_argument("--markdown", action="store_true", help="print docs/KINDS.md (every kind)")
    k.set_defaults(func=_cmd_inspect)

    s = sub.add_parser("serve", help="run a pipeline with metrics, probes, a control API and a live view over HTTP",
                       description="Run PIPELINE.yaml with an HTTP server beside it: /metrics, /livez /readyz "
                                   "/startupz, /api/v1/sources, DeepStream's /api/v1/stream/*, the live page /view.")
    s.add_argument("pipeline", help="the pipeline YAML file")
    s.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="where to listen (default 127.0.0.1:8080); any non-loopback address needs a token")
    s.add_argument("--token-file", default=None, metavar="FILE",
                   help="file holding the bearer token (else $VIDFLOW_TOKEN; never in the YAML)")
    s.add_argument("--no-control", action="store_true", help="no adding or removing sources over HTTP")
    s.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a YAML value (repeatable)")
    s.add_argument("--allow-code", **allow)
    s.set_defaults(func=_cmd_serve)

    d = sub.add_parser("demo", help="generate camera clips and run the demo pipeline on them",
                       description="Make 4 generated camera clips, run detector + tracker + embedder + gallery, "
                                   "write a tiled annotated.mp4, frames.jsonl and a summary.")
    d.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    d.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    d.add_argument("--streams", type=int, default=4, help="number of generated cameras (default 4)")
    d.add_argument("--frames", type=int, default=None, help="frames per clip (default: by device)")
    d.add_argument("--torch-threads", type=int, default=None, metavar="N",
                   help="torch's CPU threads (default: the cores this process may use, less one)")
    d.set_defaults(func=_cmd_demo)

    i = sub.add_parser("info", help="show device, NVDEC/NVENC availability and versions")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_cmd_info)

    sub.add_parser("bench", help="measure decode, model, end-to-end and naive-baseline throughput (JSON lines)",
                   add_help=False)
    sub.add_parser("export", help="what vidflow reads from a model file; export an nn.Module with its metadata",
                   add_help=False)
    g = sub.add_parser("gallery", help="manage a face/ReID gallery database (add | list | remove)",
                       add_help=False)
    g.set_defaults(func=None)
    return p


def _fault_stacks() -> None:
    """A crash in native code (a driver, a codec) prints every thread's Python stack to stderr."""
    import faulthandler
    if not faulthandler.is_enabled():
        try:
            faulthandler.enable(all_threads=True)
        except (RuntimeError, ValueError, AttributeError, OSError):   # stderr closed or not a real file
            pass


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _fault_stacks()
    parser = _parser()
    if argv and argv[0] == "gallery":
        return _cmd_gallery(argparse.Namespace(), argv[1:])
    if argv and argv[0] == "export":
        from .export import main as export_main

        return int(export_main(argv[1:]) or 0)
    if argv and argv[0] == "bench":
        return _cmd_bench(argparse.Namespace(), argv[1:])
    args = parser.parse_args(argv)
    if getattr(args, "allow_code", None):   # `run` reads the allow-list from the environment (config)
        from ._usercode import ENV, allow_list

        try:
            os.environ[ENV] = ",".join(allow_list(args.allow_code))
        except ConfigError as e:
            print(f"vidflow: {e}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose or os.environ.get("VIDFLOW_DEBUG") else logging.WARNING,
                        format="vidflow: %(levelname)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
