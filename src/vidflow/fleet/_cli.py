"""``vidflow fleet run | apply | status CAMERAS.yaml`` (registered by ``vidflow.cli``).

- ``run``: connect to Ray (``--address``; default: start a local one), start the workers, apply
  the cameras, print the placement and then the status every ``--every`` seconds (and whenever
  the placement changes) until every camera has ended or failed (``--forever``: until Ctrl-C).
  ``--watch`` re-applies the file when it changes. Exit code 1 when a camera failed.
- ``apply``: put the file's cameras into the running fleet of the same name (``fleet.name``).
- ``status``: print the running fleet's status (``--json`` for the data).

Ray is imported only when one of these runs (``pip install 'vidflow[ray]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    f = sub.add_parser("fleet", help="run cameras on a Ray fleet of pipeline workers (run | apply | status)",
                       description="A fleet of pipeline workers on Ray: cameras placed by capacity, moved when a "
                                   "worker dies, changed while running. See docs/FLEET.md.")
    fs = f.add_subparsers(dest="fleet_command", required=True)
    r = fs.add_parser("run", help="start the fleet and run the cameras of CAMERAS.yaml")
    r.add_argument("cameras", help="the cameras.yaml (fleet, pipeline, cameras)")
    r.add_argument("--address", default=None, help="Ray address (auto, ray://host:10001); default: a local Ray")
    r.add_argument("--every", type=float, default=5.0, help="seconds between status prints (default 5)")
    r.add_argument("--forever", action="store_true", help="keep running after every camera has ended")
    r.add_argument("--watch", action="store_true", help="apply CAMERAS.yaml again whenever it changes")
    r.add_argument("--allow-code", default=None, metavar="MODULES",
                   help="modules whose `module:Name` entries the YAML may import")
    r.set_defaults(func=_guard(_run))
    for name, fn, text in (("apply", _apply, "make CAMERAS.yaml's cameras the running fleet's desired set"),
                           ("status", _status, "print the running fleet's status")):
        p = fs.add_parser(name, help=text)
        p.add_argument("cameras", help="the cameras.yaml (its fleet.name finds the fleet)")
        p.add_argument("--address", default="auto", help="Ray address of the fleet's cluster (default auto)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=_guard(fn))


def _guard(fn: Any) -> Any:
    """A bad YAML or a missing Ray is a message and exit code 2, not a traceback."""
    def run(args: argparse.Namespace) -> int:
        from ..errors import ConfigError

        try:
            return fn(args)
        except ConfigError as e:
            print(f"vidflow fleet: {e}", file=sys.stderr)
            return 2
        except ModuleNotFoundError as e:
            if e.name != "ray":
                raise
            print("vidflow fleet: needs Ray: pip install 'vidflow[ray]'", file=sys.stderr)
            return 2
    return run


def _camera_dicts(spec: Any) -> list[dict[str, Any]]:
    return [{"id": c.id, **dict(c.entry), "cost": c.cost} for c in spec.cameras]


def _connect(address: str) -> Any:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, namespace="vidflow", log_to_driver=False)
    return ray


def _run(args: argparse.Namespace) -> int:
    from . import control
    from .fleet import Fleet
    from .spec import load_fleet

    spec = load_fleet(args.cameras)
    import ray

    if not ray.is_initialized():
        ray.init(address=args.address, namespace="vidflow")
    fleet = Fleet(spec.template, spec.settings, allow_code=args.allow_code)
    mailbox = control.create(spec.settings.name)
    version = ray.get(mailbox.put_cameras.remote(_camera_dicts(spec)))    # (a stale mailbox's set is not applied)
    fleet.on_tick = control.publish(mailbox, since=version)
    fleet.start()
    fleet.apply(spec.cameras)
    mtime = os.path.getmtime(args.cameras)
    last_print, placement = 0.0, None
    code = 0
    try:
        while True:
            time.sleep(0.5)
            if args.watch and os.path.getmtime(args.cameras) != mtime:
                mtime = os.path.getmtime(args.cameras)
                try:
                    fleet.apply(load_fleet(args.cameras).cameras)
                    print(f"vidflow fleet: applied {args.cameras} again", flush=True)
                except Exception as e:  # noqa: BLE001 - a bad edit: keep running the last good set
                    print(f"vidflow fleet: not applied: {e}", file=sys.stderr, flush=True)
            st = fleet.status()
            now = time.monotonic()
            new_placement = fleet.placement()
            if new_placement != placement or now - last_print >= args.every:
                placement, last_print = new_placement, now
                print(fleet.format_status(), flush=True)
            cams = st["cameras"]
            if not args.forever and cams and all(c["state"] in ("ended", "failed") for c in cams):
                code = 1 if any(c["state"] == "failed" for c in cams) else 0
                break
    except KeyboardInterrupt:
        print("vidflow fleet: stopping", file=sys.stderr)
        code = 130
    fleet.stop()
    print(fleet.format_status(), flush=True)
    ray.kill(mailbox)
    return code


def _mailbox(args: argparse.Namespace) -> tuple[Any, Any, Any] | None:
    """``(ray, spec, the running fleet's mailbox)``, or None (said on stderr) when none runs."""
    from . import control
    from .spec import load_fleet

    spec = load_fleet(args.cameras)
    ray = _connect(args.address)
    try:
        return ray, spec, control.attach(spec.settings.name)
    except ValueError as e:
        print(f"vidflow fleet: {e}", file=sys.stderr)
        return None


def _apply(args: argparse.Namespace) -> int:
    got = _mailbox(args)
    if got is None:
        return 1
    ray, spec, handle = got
    version = ray.get(handle.put_cameras.remote(_camera_dicts(spec)))
    print(f"vidflow fleet: {len(spec.cameras)} cameras sent to fleet {spec.settings.name!r} (version {version}); "
          f"the driver applies them on its next tick")
    return 0


def _status(args: argparse.Namespace) -> int:
    from ._book import format_status

    got = _mailbox(args)
    if got is None:
        return 1
    ray, spec, handle = got
    status, at = ray.get(handle.get_status.remote())
    if status is None:
        print("vidflow fleet: no status published yet", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**status, "published_at": at}, default=str))
    else:
        print(format_status(status))
        print(f"(published {time.time() - at:.1f} s ago)")
    return 0
