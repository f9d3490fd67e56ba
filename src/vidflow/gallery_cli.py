"""``vidflow gallery add|list|remove``: edit a gallery database (SQLite) from the shell.

    vidflow gallery add alice --db gallery.db --vectors alice.npy        # [K, D] or [D] float array
    vidflow gallery add alice --db gallery.db --image a1.png --image a2.jpg [--model demo]
    vidflow gallery list --db gallery.db
    vidflow gallery remove alice --db gallery.db

``--image`` embeds each whole image (an object crop, e.g. a face) with the embedder ``--model``
(``demo`` = vidflow's demo embedder, or a model path / ``module:attr`` callable with ``--size``).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from .batch import Batch, FrameInfo, Objects
from .gallery import Gallery

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidflow gallery", description="Edit a gallery of known identities.")
    sub = p.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="enrol vectors or images under a name")
    add.add_argument("name")
    add.add_argument("--db", default="gallery.db", help="gallery file (default: gallery.db)")
    add.add_argument("--vectors", action="append", default=[], help=".npy file of shape [K, D] or [D]")
    add.add_argument("--image", action="append", default=[], help="image file to embed (repeatable)")
    add.add_argument("--model", default="demo", help="embedder for --image (default: demo)")
    add.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=None, help="embedder crop size")
    lst = sub.add_parser("list", help="list identities and their vector counts")
    lst.add_argument("--db", default="gallery.db")
    rm = sub.add_parser("remove", help="remove an identity")
    rm.add_argument("name")
    rm.add_argument("--db", default="gallery.db")
    return p


def _read_image(path: str) -> torch.Tensor:
    """First frame of an image (or video) file as ``[3,H,W]`` uint8 RGB, via PyAV."""
    import av

    with av.open(path) as c:
        for frame in c.decode(video=0):
            return torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).contiguous()
    raise ValueError(f"{path}: no image in the file")


def _embed_images(paths: list[str], model: str, size: list[int] | None) -> torch.Tensor:
    from .stages.embed import Embedder

    if ":" in model and not model.endswith((".pt", ".onnx", ".torchscript")):
        import importlib

        mod, attr = model.split(":", 1)
        model_obj = getattr(importlib.import_module(mod), attr)
    else:
        model_obj = model
    emb = Embedder(model_obj, size=tuple(size) if size else None)
    vecs = []
    for p in paths:  # each image is one object covering the whole frame
        img = _read_image(p)
        h, w = img.shape[1], img.shape[2]
        batch = Batch(images=img[None], frames=(FrameInfo(0, 0, 0.0, 0, w, h),),
                      objects=Objects.create(frame_idx=torch.zeros(1), bbox=torch.tensor([[0.0, 0.0, w, h]])))
        vecs.append(emb(batch).objects.attrs[f"{emb.name}.vector"])
    return torch.cat(vecs)


def main(argv: list[str] | None = None) -> int:
    """Run ``vidflow gallery ...``; returns the exit status (0 ok, 1 not found, 2 usage)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse exits on --help and on usage errors
        return int(e.code or 0)
    if args.cmd in ("list", "remove") and not os.path.exists(args.db):   # never create a file to read it
        print(f"vidflow gallery: no gallery file {args.db} (`vidflow gallery add NAME --db {args.db} ...` "
              "creates one)", file=sys.stderr)
        return 1
    try:
        with Gallery(args.db) as g:
            if args.cmd == "list":
                counts, ids = g.counts(), g.ids()
                for name, n in counts.items():
                    print(f"{ids[name]}\t{name}\t{n} vector{'s' if n != 1 else ''}")
                print(f"{len(counts)} identit{'y' if len(counts) == 1 else 'ies'} in {args.db} (dim {g.dim})")
                return 0
            if args.cmd == "remove":
                if not g.remove(args.name):
                    print(f"vidflow gallery: {args.name!r} is not in {args.db}", file=sys.stderr)
                    return 1
                print(f"removed {args.name!r} from {args.db}")
                return 0
            if not args.vectors and not args.image:
                print("vidflow gallery add: give --vectors FILE.npy and/or --image FILE", file=sys.stderr)
                return 2
            parts = [torch.from_numpy(np.atleast_2d(np.load(p, allow_pickle=False)).astype(np.float32))
                     for p in args.vectors]
            if args.image:
                parts.append(_embed_images(args.image, args.model, args.size))
            vecs = torch.cat(parts)
            idx = g.enrol(args.name, vecs)
            print(f"enrolled {vecs.shape[0]} vector(s) of dim {vecs.shape[1]} as {args.name!r} (identity {idx}) in {args.db}")
            return 0
    except (ValueError, OSError) as e:
        print(f"vidflow gallery: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
