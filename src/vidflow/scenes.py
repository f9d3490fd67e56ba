"""Deterministic synthetic "shapes" scenes with ground truth, and H.264 clips made from them.

A scene is a sliding background (a grid of random colours, one per 16x16 block, bilinearly
upscaled, moving sideways) with 3-13 solid objects of random colour: axis-aligned boxes
(height 0.7 x width), discs and upright isosceles triangles (apex at top centre), 50-260 px at
1920 px width (scaled with the frame width), moving in straight lines and bouncing off the
borders, overlapping freely; then per-pixel noise of +-5. Colour and shape are fixed per
``object_id`` for the whole clip. ``render(i)`` depends only on ``(seed, i)`` (positions are
computed in closed form, not stepped), so any frame can be rendered in any order.

>>> scene = Scene(640, 480, seed=1)
>>> rgb, objects = scene.render(0)        # rgb: np.ndarray [480, 640, 3] uint8
>>> clip = make_clip("/tmp/a.mp4", frames=30, seed=1)   # + /tmp/a.mp4.gt.jsonl
>>> gt = load_ground_truth(clip.gt_path)  # one dict per frame (DESIGN.md JSONL schema)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CLASS_NAMES", "Scene", "Clip", "make_clip", "load_ground_truth"]

CLASS_NAMES = ("box", "disc", "triangle")
_BLOCK = 16
_TRI_H = 0.87          # triangle height / base width
_BOX_H = 0.7           # box height / width
_LO, _HI = 5, 250      # colour levels before noise, so +-5 noise never clips
_NOISE_LUT = (np.arange(256) % 11).astype(np.uint8)   # byte -> 0..10 (noise + 5)


class Scene:
    """A deterministic moving-shapes scene of ``width`` x ``height`` pixels.

    ``num_objects=(lo, hi)`` is the inclusive range the object count is drawn from (or an int).
    ``render(i) -> (rgb [H,W,3] uint8, objects)`` where ``objects`` is a list of dicts
    ``{"bbox": [x1,y1,x2,y2] (float source px, full extent also when occluded, clipped to the
    frame), "class_id": 0 box | 1 disc | 2 triangle, "label", "object_id", "color": (r,g,b)}``,
    in drawing order (later ones are on top).
    """

    def __init__(self, width: int, height: int, *, seed: int = 0,
                 num_objects: tuple[int, int] | int = (3, 13), fps: float = 30.0) -> None:
        if width < 32 or height < 32:
            raise ValueError(f"Scene: width and height must be >= 32, got {width}x{height}")
        if fps <= 0:
            raise ValueError(f"Scene: fps must be > 0, got {fps}")
        lo, hi = (num_objects, num_objects) if isinstance(num_objects, int) else num_objects
        if not 0 <= lo <= hi:
            raise ValueError(f"Scene: num_objects must be an int or (lo, hi) with 0 <= lo <= hi, got {num_objects}")
        self.width, self.height, self.seed, self.fps = int(width), int(height), int(seed), float(fps)
        rng = np.random.default_rng([self.seed, 0x5CE4E])
        k = width / 1920.0
        # background: a grid of colours, one per 16x16 block, bilinearly upscaled once into a
        # horizontally periodic strip; a frame is a contiguous slice of it (integer px offset).
        # Levels are kept in [5, 250] so the +-5 noise can be added in uint8 without clipping.
        gh, gw = -(-height // _BLOCK) + 1, -(-width // _BLOCK) + 1
        grid = rng.integers(_LO, _HI + 1, size=(gh, gw, 3)).astype(np.float32)
        ys = (np.arange(height) + 0.5) / _BLOCK - 0.5
        yf = np.floor(ys).astype(np.int64)
        y0, y1 = np.clip(yf, 0, gh - 1), np.clip(yf + 1, 0, gh - 1)   # edge-clamped
        fy = (ys - yf).astype(np.float32)[:, None, None]
        rows = grid[y0] * (1 - fy) + grid[y1] * fy                    # [H, gw, 3]
        period = gw * _BLOCK
        xs = (np.arange(period + width) + 0.5) / _BLOCK - 0.5
        x0 = np.floor(xs)
        fx = (xs - x0).astype(np.float32)[None, :, None]
        i0 = x0.astype(np.int64) % gw
        strip = rows[:, i0] * (1 - fx) + rows[:, (i0 + 1) % gw] * fx  # [H, period + W, 3]
        self._strip = np.ascontiguousarray(np.rint(strip).astype(np.uint8))
        self._period = period
        self._bg_speed = float(rng.uniform(20, 80) * k * rng.choice([-1, 1]))   # px / s
        # objects
        n = int(rng.integers(lo, hi + 1))
        self.objects: list[dict[str, Any]] = []
        for oid in range(n):
            cls = int(rng.integers(0, 3))
            s = float(rng.uniform(50, 260) * k)
            w, h = (s, s * _BOX_H) if cls == 0 else (s, s) if cls == 1 else (s, s * _TRI_H)
            w, h = min(w, width - 2.0), min(h, height - 2.0)
            speed = rng.uniform(30, 300) * k
            ang = rng.uniform(0, 2 * np.pi)
            self.objects.append(dict(
                object_id=oid, class_id=cls, label=CLASS_NAMES[cls], w=w, h=h,
                x0=float(rng.uniform(0, width - w)), y0=float(rng.uniform(0, height - h)),
                vx=float(speed * np.cos(ang)), vy=float(speed * np.sin(ang)),
                color=tuple(int(c) for c in rng.integers(_LO, _HI + 1, size=3))))

    def __repr__(self) -> str:
        return f"Scene({self.width}x{self.height}, seed={self.seed}, objects={len(self.objects)}, fps={self.fps})"

    @staticmethod
    def _bounce(p0: float, v: float, t: float, span: float) -> float:
        """Position at time t of a point moving at v inside [0, span], reflecting at the ends."""
        if span <= 0:
            return 0.0
        p = (p0 + v * t) % (2 * span)
        return 2 * span - p if p > span else p

    def boxes(self, i: int) -> list[dict[str, Any]]:
        """Ground truth of frame ``i`` (no rendering): see the class docstring."""
        t = i / self.fps
        out = []
        for o in self.objects:
            x1 = self._bounce(o["x0"], o["vx"], t, self.width - o["w"])
            y1 = self._bounce(o["y0"], o["vy"], t, self.height - o["h"])
            x2, y2 = min(x1 + o["w"], self.width), min(y1 + o["h"], self.height)
            out.append(dict(bbox=[x1, y1, x2, y2], class_id=o["class_id"], label=o["label"],
                            object_id=o["object_id"], color=o["color"]))
        return out

    def _background(self, i: int) -> np.ndarray:
        off = int(round(self._bg_speed * i / self.fps)) % self._period
        return self._strip[:, off:off + self.width].copy()         # [H, W, 3] uint8

    def render(self, i: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Frame ``i``: ``(rgb [H,W,3] uint8, objects)``."""
        if i < 0:
            raise ValueError(f"Scene.render: frame index must be >= 0, got {i}")
        img = self._background(i)
        objs = self.boxes(i)
        for o, spec in zip(objs, self.objects):
            x1, y1, x2, y2 = o["bbox"]
            c0, r0 = int(np.floor(x1)), int(np.floor(y1))
            c1, r1 = min(int(np.ceil(x2)), self.width), min(int(np.ceil(y2)), self.height)
            px = (np.arange(c0, c1, dtype=np.float32) + 0.5)[None, :]    # pixel centres
            py = (np.arange(r0, r1, dtype=np.float32) + 0.5)[:, None]
            inside = (px >= x1) & (px < x2) & (py >= y1) & (py < y2)
            cls = spec["class_id"]
            if cls == 1:                                                 # disc
                r = spec["w"] / 2
                inside &= (px - (x1 + r)) ** 2 + (py - (y1 + r)) ** 2 <= r * r
            elif cls == 2:                                               # triangle, apex top centre
                half = (py - y1) / spec["h"] * (spec["w"] / 2)
                inside &= np.abs(px - (x1 + spec["w"] / 2)) <= half
            region = img[r0:r1, c0:c1]
            region[inside] = np.asarray(o["color"], dtype=np.uint8)
        rng = np.random.default_rng([self.seed, i, 0x401])
        noise = _NOISE_LUT[np.frombuffer(rng.bytes(img.size), dtype=np.uint8)].reshape(img.shape)
        img += noise                                                 # levels stay in [0, 255]
        img -= 5
        return img, objs


@dataclass(frozen=True)
class Clip:
    """A clip written by :func:`make_clip`: the video file and its ground truth JSONL."""

    path: str
    gt_path: str
    width: int
    height: int
    frames: int
    fps: float


_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".ts": "mpegts", ".h264": "h264",
            ".264": "h264", ".avi": "avi"}


def make_clip(path: str | os.PathLike, *, width: int = 640, height: int = 480, frames: int = 60,
              fps: float = 30, seed: int = 0, bframes: bool = True, bitrate: int | None = None,
              num_objects: tuple[int, int] | int = (3, 13)) -> Clip:
    """Render a scene and write it as H.264 (libx264, yuv420p, BT.709 for >= 720 lines else
    BT.601, limited range, tagged in the stream) to ``path``; the container follows the suffix
    (.mp4 .mov .mkv .ts .avi, .h264/.264 raw Annex B). ``bframes=True`` uses 2 B-frames.
    ``bitrate`` in bit/s (default: CRF 20). Ground truth goes to ``<path>.gt.jsonl``, one line
    per frame in the DESIGN.md JSONL schema (pts = frame / fps)."""
    import av

    path = str(path)
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(f"make_clip: suffix must be one of {sorted(_FORMATS)}, got {suffix!r}")
    if width % 2 or height % 2:
        raise ValueError(f"make_clip: width and height must be even for yuv420p, got {width}x{height}")
    if frames < 1:
        raise ValueError(f"make_clip: frames must be >= 1, got {frames}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    scene = Scene(width, height, seed=seed, fps=float(fps), num_objects=num_objects)
    rate = Fraction(fps).limit_denominator(1001)
    bt709 = height >= 720
    cs = av.video.reformatter.Colorspace.ITU709 if bt709 else av.video.reformatter.Colorspace.ITU601
    opts = {"bf": "2" if bframes else "0", "g": str(max(2 * int(round(fps)), 4))}
    if bitrate is None:
        opts["crf"] = "20"
    gt_path = path + ".gt.jsonl"
    with av.open(path, "w", format=_FORMATS[suffix]) as out, open(gt_path, "w") as gt:
        st = out.add_stream("libx264", rate=rate, options=opts)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        if bitrate is not None:
            st.bit_rate = int(bitrate)
        cc = st.codec_context
        cc.color_range = 1                                   # MPEG / limited
        cc.colorspace = 1 if bt709 else 6                    # AVCOL_SPC_BT709 / SMPTE170M
        cc.color_primaries = 1 if bt709 else 6
        cc.color_trc = 1 if bt709 else 6
        for i in range(frames):
            rgb, objs = scene.render(i)
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            vf = vf.reformat(format="yuv420p", dst_colorspace=cs, dst_color_range=1)
            vf.pts = i
            vf.time_base = 1 / rate
            for pkt in st.encode(vf):
                out.mux(pkt)
            gt.write(json.dumps({
                "source_id": 0, "frame_num": i, "pts": i / float(fps), "width": width, "height": height,
                "objects": [{"bbox": [round(v, 3) for v in o["bbox"]], "class_id": o["class_id"],
                             "label": o["label"], "confidence": 1.0, "object_id": o["object_id"],
                             "attrs": {"color": list(o["color"])}} for o in objs]}) + "\n")
        for pkt in st.encode(None):
            out.mux(pkt)
    return Clip(path=path, gt_path=gt_path, width=width, height=height, frames=frames, fps=float(fps))


def load_ground_truth(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ground truth JSONL (``make_clip``'s ``<clip>.gt.jsonl`` or the clip path itself,
    then ``.gt.jsonl`` is appended): one dict per frame, sorted by ``frame_num``."""
    p = str(path)
    if not p.endswith(".jsonl") and os.path.exists(p + ".gt.jsonl"):
        p += ".gt.jsonl"
    with open(p) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return sorted(rows, key=lambda r: r["frame_num"])
