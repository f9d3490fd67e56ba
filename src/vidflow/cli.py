"""The ``vidflow`` command line: ``run``, ``serve``, ``check``, ``inspect``, ``demo``, ``info``, ``bench``,
``gallery`` (also ``python -m vidflow``).

Exit codes of ``run`` / ``serve``: 0 every source ended and every output closed; 1 a source,
stage or sink failed (the run still closed every output and printed its summary); 2 a usage or
config error, found before anything started (one line on stderr, no traceback); 130 / 143
stopped by SIGINT / SIGTERM, after a clean stop (outputs closed, summary printed; a second
signal stops at once, still closing the outputs: ``vidflow._signals``).

Logs go to stderr, timestamped ``key=value`` lines (``--log-format json``: JSON lines), at
``--log-level`` (default info; ``-v`` = debug); the summary goes to stdout.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from ._info import info, info_text
from ._runner import progress, run_to_end
from .errors import ConfigError, redact_uri

__all__ = ["main", "info", "info_text"]

log = logging.getLogger("vidflow.cli")


def _say(msg: str, *, level: int = logging.ERROR, **extra: object) -> None:
    """A one-line message of the command line on stderr: ``vidflow: MSG``, or a JSON log line
    with ``--log-format json`` (so that every stderr line parses)."""
    if os.environ.get("VIDFLOW_LOG_FORMAT") == "json":
        log.log(level, "%s", msg, extra=extra)
    else:
        print(f"vidflow: {msg}", file=sys.stderr, flush=True)


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    if args.torch_threads is not None:
        args.set = [*(args.set or []), f"torch_threads={args.torch_threads}"]
    try:
        pipe = Pipeline.from_yaml(args.pipeline, args.set or None, progress=None if args.quiet else progress)
    except ConfigError as e:
        _say(f"config error: {redact_uri(e)}", path=e.path)
        return 2
    except KeyboardInterrupt:        # Ctrl-C while models load: nothing started, nothing to close
        return 130
    return run_to_end(pipe, args)


def _cmd_serve(args: argparse.Namespace) -> int:
    """``vidflow serve``: ``run`` with the HTTP server of ``vidflow.serve`` beside it; stops on
    SIGTERM / SIGINT as ``run`` does."""
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
        _say(f"config error: {redact_uri(e)}", path=e.path)
        return 2
    try:
        server = serve.start(pipe, args.http, token_file=args.token_file, control=not args.no_control)
    except ValueError as e:
        _say(f"serve: {redact_uri(e)}")
        return 2
    _say(f"serving {server.url}", level=logging.INFO, url=server.url)
    try:
        return run_to_end(pipe, args)
    finally:
        server.stop()


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .device import resolve_device

    try:
        resolve_device(args.device)
    except ValueError as e:
        print(f"vidflow demo: {e}", file=sys.stderr)
        return 2
    needs = {"segment": "an exported YOLO segmentation model (Ultralytics -seg: yolo11n-seg.onnx or .torchscript, "
                        "output0 [B, 4+C+32, N] and mask prototypes [B, 32, h, w])",
             "pose": "an exported YOLO pose model (Ultralytics -pose: yolo11n-pose.onnx or .torchscript, with "
                     "kpt_shape in its metadata)"}
    if args.model is None and args.task in needs:
        print(f"vidflow demo: --task {args.task} needs a {args.task} model, and vidflow ships none: pass "
              f"--model PATH to {needs[args.task]} (docs/MODELS.md)", file=sys.stderr)
        return 2
    if args.model is not None and not os.path.isfile(args.model):
        print(f"vidflow demo: --model: file not found: {args.model}", file=sys.stderr)
        return 2
    try:
        run_demo(args.out, device=args.device, streams=args.streams, frames=args.frames, task=args.task,
                 detector=args.model or "demo", torch_threads=args.torch_threads)
    except ValueError as e:
        print(f"vidflow demo: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    facts = info()
    if args.json:
        print(json.dumps(facts, indent=2, default=str))
    else:
        print(info_text(facts))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    """Validate a pipeline YAML without running it and print its parts."""
    from ._kinddoc import describe_parts
    from .config import build_parts, load_config
    from .pipeline import Pipeline

    try:
        parts = build_parts(load_config(args.pipeline, args.set or None), allow_code=args.allow_code)
        parts.kwargs(inspect.signature(Pipeline).parameters)
    except ConfigError as e:
        _say(f"config error: {redact_uri(e)}", path=e.path)
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

    from ._log import FORMATS, LEVELS

    p = argparse.ArgumentParser(prog="vidflow", description="GPU video analytics pipelines in Python.")
    logs = argparse.ArgumentParser(add_help=False)     # before or after the command: `vidflow run p.yaml -v`
    for parser, default in ((p, None), (logs, argparse.SUPPRESS)):
        parser.add_argument("-v", "--verbose", action="store_true", default=default or False,
                            help="log debug messages (= --log-level debug)")
        parser.add_argument("--log-format", choices=FORMATS, default=default or "text",
                            help="text: timestamped key=value lines (default); json: one JSON object per line")
        parser.add_argument("--log-level", choices=LEVELS, default=default,
                            help="vidflow's log level (default info; other libraries: warning)")
    stop: dict[str, Any] = dict(type=float, default=None, metavar="SECONDS",
                help="on SIGTERM / SIGINT, seconds allowed to drain queued batches before stopping now "
                     "(default: the YAML's stop_timeout, else 10)")
    p.add_argument("--version", action="version", version=f"vidflow {__version__}")
    allow: dict[str, Any] = dict(metavar="MODULES", default=None,
                 help="comma-separated modules whose `module:Name` / `call:` entries the YAML may import "
                      "(also $VIDFLOW_ALLOW_CODE); a YAML runs no code otherwise")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a pipeline described in YAML", parents=[logs],
                       description="Run PIPELINE.yaml to the end, printing per-source fps and a summary.")
    r.add_argument("pipeline", help="the pipeline YAML file")
    r.add_argument("--set", action="append", metavar="PATH=VALUE",
                   help="override a YAML value, e.g. --set muxer.batch_size=16 --set detect.conf=0.4 (repeatable)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress line (there is none when stderr is not a terminal)")
    r.add_argument("--stop-timeout", **stop)
    r.add_argument("--torch-threads", type=int, default=None, metavar="N",
                   help="torch's CPU threads (= --set torch_threads=N; default: the cores this process may use, less one)")
    r.add_argument("--allow-code", **allow)
    r.set_defaults(func=_cmd_run)

    c = sub.add_parser("check", help="validate a pipeline YAML without running it; print its parts", parents=[logs],
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
                       parents=[logs],
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
    s.add_argument("--stop-timeout", **stop)
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
    d.add_argument("--task", choices=("detect", "segment", "pose", "semantic"), default="detect",
                   help="the detector's head (default detect; semantic runs vidflow's demo semantic model; "
                        "segment and pose need --model)")
    d.add_argument("--model", default=None, metavar="PATH",
                   help="the detector's model (.onnx, .torchscript; default: vidflow's demo model for the task)")
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
    from .fleet._cli import add_parser as add_fleet_parser     # vidflow fleet run|apply|status (Ray, lazily)
    add_fleet_parser(sub)
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
    from . import _log

    level = "debug" if args.verbose or os.environ.get("VIDFLOW_DEBUG") else (args.log_level or "info")
    _log.setup(level, args.log_format)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
