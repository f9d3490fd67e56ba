"""``vidflow demo``: generated camera clips through the whole pipeline, with a summary table.

Makes ``streams`` H.264 clips of synthetic scenes (``vidflow.scenes``; 640x360 on the CPU, 1080p
on a GPU) with their ground truth, enrols every object of each clip's first frame in a gallery,
then runs ``Detector("demo") -> Tracker() -> Embedder("demo") -> Identify(gallery) -> Annotate()``
on all clips at once and writes ``frames.jsonl`` and a tiled ``annotated.mp4`` under
``out_dir``. Prints one row per source: frames, detections, tracks, fps, and detection recall /
precision at IoU 0.5 against the ground truth.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

__all__ = ["run_demo", "match_counts"]


def match_counts(pred: np.ndarray, gt: np.ndarray, iou: float = 0.5) -> int:
    """Greedy one-to-one matches between ``pred [P,4]`` and ``gt [G,4]`` xyxy boxes at ``iou``."""
    if len(pred) == 0 or len(gt) == 0:
        return 0
    lt = np.maximum(pred[:, None, :2], gt[None, :, :2])
    rb = np.minimum(pred[:, None, 2:], gt[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    m = inter / (area(pred)[:, None] + area(gt)[None, :] - inter + 1e-9)
    n = 0
    while m.size and m.max() >= iou:
        i, j = np.unravel_index(np.argmax(m), m.shape)
        m[i, :], m[:, j] = -1, -1
        n += 1
    return n


def _clips(out: Path, streams: int, w: int, h: int, frames: int, fps: float) -> list[Any]:
    """The demo clips (made once; reused when the same ones are already there)."""
    from .scenes import Clip, make_clip

    clips = []
    for s in range(streams):
        path = out / "clips" / f"cam{s}.mp4"
        meta = path.with_suffix(".json")
        want = {"width": w, "height": h, "frames": frames, "fps": fps, "seed": 100 + s}
        if meta.exists() and path.exists() and json.loads(meta.read_text()) == want:
            clips.append(Clip(str(path), str(path) + ".gt.jsonl", w, h, frames, fps))
            continue
        clips.append(make_clip(path, width=w, height=h, frames=frames, fps=fps, seed=100 + s))
        meta.write_text(json.dumps(want))
    return clips


def _gallery(clips: list[Any], embedder: Any, device: torch.device) -> Any:
    """A gallery with every object of each clip's first frame, named ``c<stream>-<label><id>``, each
    enrolled with its class (a disc is never named after a box)."""
    from .batch import Batch, FrameInfo, Objects
    from .gallery import Gallery
    from .scenes import Scene

    gallery = Gallery()
    for s, clip in enumerate(clips):
        rgb, objs = Scene(clip.width, clip.height, seed=100 + s, fps=clip.fps).render(0)
        if not objs:
            continue
        images = torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous().to(device)
        table = Objects.create(frame_idx=torch.zeros(len(objs), dtype=torch.int64),
                               bbox=torch.tensor([o["bbox"] for o in objs]),
                               class_id=torch.tensor([o["class_id"] for o in objs])).to(device)
        batch = Batch(images=images, frames=(FrameInfo(s, 0, 0.0, width=clip.width, height=clip.height),),
                      objects=table)
        vec = embedder(batch).objects.attrs[f"{embedder.name}.vector"]
        for o, v in zip(objs, vec):
            gallery.enrol(f"c{s}-{o['label']}{o['object_id']}", v, class_id=int(o["class_id"]))
    return gallery


def run_demo(out_dir: str = "out/demo", *, device: str = "auto", streams: int = 4, frames: int | None = None,
             size: tuple[int, int] | None = None, detector: Any = "demo", embedder: Any = "demo",
             task: str = "detect", torch_threads: int | None = None,
             print_fn: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the demo; returns ``{"sources": {id: {...}}, "wall_s", "fps", "files"}``.

    ``device``: ``"auto"`` | ``"cpu"`` | ``"cuda"``. ``streams``: number of generated cameras.
    ``frames``: frames per clip (default 60 on the CPU, 300 on a GPU). ``size``: clip size
    ``(W, H)`` (default 640x360 on the CPU, 1920x1080 on a GPU). ``detector`` / ``embedder``:
    the ``model`` of the Detector / Embedder stages (default: vidflow's demo models).
    ``task``: ``"detect"`` | ``"segment"`` | ``"pose"`` | ``"semantic"``: the detector's head
    (segment and pose need a model of that kind, e.g. an exported YOLO11n-seg / -pose: vidflow
    ships no such model; ``semantic`` runs vidflow's own demo semantic model by default).
    ``torch_threads``: torch's CPU threads for the run (None: from the cores this process may use,
    ``vidflow._threads``). ``print_fn``: where the table goes (``None``: nowhere).
    """
    from ._threads import apply_threads
    from .device import resolve_device

    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    if task not in ("detect", "segment", "pose", "semantic"):
        raise ValueError(f"task: expected detect, segment, pose or semantic, got {task!r}")
    if task in ("segment", "pose") and isinstance(detector, str) and detector == "demo":
        raise ValueError(f"task {task!r} needs a {task} model (vidflow ships none): pass the model, e.g. "
                         f"yolo11n-{'seg' if task == 'segment' else 'pose'}.onnx (docs/MODELS.md)")
    say = print_fn or (lambda s: None)
    dev = resolve_device(device)
    before = apply_threads(torch_threads, str(dev))
    try:
        return _run(out_dir, dev, streams, frames, size, detector, embedder, task, say)
    finally:
        apply_threads(before)


def _run(out_dir: str, dev: torch.device, streams: int, frames: int | None, size: tuple[int, int] | None,
         detector: Any, embedder: Any, task: str, say: Callable[[str], None]) -> dict[str, Any]:
    from .gallery import Identify
    from .mux import Muxer
    from .ops.draw import Annotate
    from .pipeline import Pipeline
    from .scenes import load_ground_truth
    from .sinks.jsonl import JsonlSink
    from .sinks.tiler import grid_for
    from .sinks.video import VideoSink
    from .sources.file import FileSource
    from .stages.detect import Detector
    from .stages.embed import Embedder
    from .stages.track import Tracker

    gpu = dev.type == "cuda"
    w, h = (int(size[0]), int(size[1])) if size else ((1920, 1080) if gpu else (640, 360))
    n_frames = int(frames) if frames else (300 if gpu else 60)
    fps = 30.0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.monotonic()
    clips = _clips(out, streams, w, h, n_frames, fps)
    say(f"clips: {streams} x {w}x{h}, {n_frames} frames each, in {out / 'clips'} ({time.monotonic() - t0:.1f} s)")
    emb = Embedder(embedder)
    gallery = _gallery(clips, emb, dev)
    say(f"gallery: {len(gallery)} identities from the clips' first frames")

    rows, cols = grid_for(streams)
    mosaic = (1920, 1080) if gpu else (1280, 720)
    pipe = Pipeline(
        sources=[FileSource(c.path) for c in clips],
        muxer=Muxer(batch_size=streams * (2 if gpu else 1), max_wait_ms=30, size=(w, h)),
        stages=[Detector(detector, head=None if task == "detect" else cast(Any, task)), Tracker(), emb, Identify(gallery),
                Annotate()],
        sinks=[JsonlSink(out / "frames.jsonl"),
               VideoSink(out / "annotated.mp4", fps=fps, rows=rows, cols=cols, size=mosaic, draw=False,
                         overlay=True, names={s: f"cam{s}" for s in range(streams)})],
        device=dev)

    gts: dict[Any, Any] = {s: load_ground_truth(c.gt_path) for s, c in enumerate(clips)}
    acc: dict[Any, dict[str, Any]] = {s: {"gt": 0, "pred": 0, "match": 0, "objects": 0, "tracks": set(), "named": 0}
                                      for s in range(streams)}
    for batch in pipe:
        o = batch.objects
        ident = o.attrs.get("identify.identity", torch.full_like(o.object_id, -1))
        host = torch.cat([o.frame_idx[:, None].double(), o.object_id[:, None].double(), ident[:, None].double(),
                          o.bbox.double()], 1).cpu().numpy()  # one host transfer per batch
        for i, f in enumerate(batch.frames):
            rows_i = host[host[:, 0] == i]
            a = acc[f.source_id]
            gt = np.array([g["bbox"] for g in gts[f.source_id][f.frame_num]["objects"]]).reshape(-1, 4)
            a["gt"] += len(gt)
            a["pred"] += len(rows_i)
            a["match"] += match_counts(rows_i[:, 3:7], gt)
            a["tracks"].update(int(t) for t in rows_i[:, 1] if t >= 0)
            a["named"] += int((rows_i[:, 2] >= 0).sum())
    summary = pipe.summary

    result: dict[str, Any] = {"sources": {}, "wall_s": summary.wall_s, "fps": summary.fps,
                              "files": {"jsonl": str(out / "frames.jsonl"), "video": str(out / "annotated.mp4"),
                                        "clips": [c.path for c in clips]}}
    say("")
    say(f"{'source':>6} {'frames':>6} {'objects':>8} {'tracks':>6} {'gt tracks':>9} {'named':>6} "
        f"{'fps':>6} {'recall':>7} {'precision':>9}")
    for s in range(streams):
        a, st = acc[s], summary.sources[s]
        recall = a["match"] / a["gt"] if a["gt"] else math.nan
        precision = a["match"] / a["pred"] if a["pred"] else math.nan
        gt_tracks = len({g["object_id"] for fr in gts[s] for g in fr["objects"]})
        row = {"frames": st.frames, "objects": a["pred"], "tracks": len(a["tracks"]), "gt_tracks": gt_tracks,
               "named": a["named"], "fps": st.fps, "recall": recall, "precision": precision}
        result["sources"][s] = row
        say(f"{s:>6} {st.frames:>6} {a['pred']:>8} {len(a['tracks']):>6} {gt_tracks:>9} {a['named']:>6} "
            f"{st.fps:>6.1f} {recall:>7.3f} {precision:>9.3f}")
    say(f"total: {summary.frames} frames in {summary.wall_s:.1f} s ({summary.fps:.1f} fps) on {dev}; "
        f"wrote {out / 'frames.jsonl'} and {out / 'annotated.mp4'}")
    return result
