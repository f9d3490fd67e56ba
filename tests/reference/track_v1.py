"""The tracker as it was before the all-streams rewrite (vidflow at c18fa48: ``stages/track.py``
with its ``_kalman.py`` inlined), kept ONLY as a reference: ``tests/unit/test_track_reference.py``
asserts that today's ``Tracker`` gives the same ids and boxes, and ``benchmarks/track.py`` times
both side by side. Delete it once the new tracker has run a release. Not part of the package."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Literal

import numpy as np
import torch

from vidflow.batch import TRACKER_BBOX, Batch
from scipy.optimize import linear_sum_assignment

__all__ = ["ReferenceTracker"]

# ---- _assign.py ----
BIG = 1e6
"""Cost of a pair that must not be matched (finite, so that it never makes the problem infeasible)."""


def pair_iou(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """IoU of pairs of xyxy boxes ``a[ia[p]]``, ``b[ib[p]]``: ``a [T,4]``, ``b [D,4]``, ``ia``/``ib [P]``
    -> ``[P]`` (the same numbers as ``ops.nms.box_iou(a, b)[ia, ib]``)."""
    area_a = np.maximum(a[:, 2] - a[:, 0], 0) * np.maximum(a[:, 3] - a[:, 1], 0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    iw = np.minimum(a[ia, 2], b[ib, 2]) - np.maximum(a[ia, 0], b[ib, 0])
    ih = np.minimum(a[ia, 3], b[ib, 3]) - np.maximum(a[ia, 1], b[ib, 1])
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    return inter / np.maximum(area_a[ia] + area_b[ib] - inter, 1e-9)


def match(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one matching of rows and columns of ``cost [T,D]`` (float64).

    Entries ``>= BIG`` (gated pairs) are never matched. Returns ``(rows, cols)`` int64 arrays of
    the matched pairs. When every row and every column has at most one allowed pair (the usual
    case with IoU gating) those pairs are the optimum and the Hungarian step is skipped.
    """
    ok = cost < BIG
    if (ok.sum(0) <= 1).all() and (ok.sum(1) <= 1).all():
        rows, cols = np.nonzero(ok)
        return rows, cols
    rows, cols = linear_sum_assignment(cost)
    keep = ok[rows, cols]
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


# ---- _kalman.py (old: full 8x8 covariances, np.linalg.solve) ----


_W_POS = 1.0 / 20
_W_VEL = 1.0 / 160
_I8 = np.arange(8)
_I4 = np.arange(4)
# per-column multipliers of the box height h for the standard deviations (0 = constant column)
_INIT_W = np.array([2 * _W_POS, 2 * _W_POS, 0.0, 2 * _W_POS, 10 * _W_VEL, 10 * _W_VEL, 0.0, 10 * _W_VEL])
_PRED_W = np.array([_W_POS, _W_POS, 0.0, _W_POS, _W_VEL, _W_VEL, 0.0, _W_VEL])
_MEAS_W = np.array([_W_POS, _W_POS, 0.0, _W_POS])


def xyxy_to_xyah(b: np.ndarray) -> np.ndarray:
    """``[N,4]`` x1,y1,x2,y2 -> ``[N,4]`` cx, cy, w/h, h (float64)."""
    w = b[:, 2] - b[:, 0]
    h = np.maximum(b[:, 3] - b[:, 1], 1e-3)
    out = np.empty((b.shape[0], 4))
    out[:, 0] = b[:, 0] + w / 2
    out[:, 1] = b[:, 1] + h / 2
    out[:, 2] = w / h
    out[:, 3] = h
    return out


def xyah_to_xyxy(m: np.ndarray) -> np.ndarray:
    """``[N,>=4]`` cx, cy, a, h (first 4 columns) -> ``[N,4]`` x1,y1,x2,y2 (float64)."""
    h = np.maximum(m[:, 3], 1e-3)
    w = np.maximum(m[:, 2], 1e-3) * h
    out = np.empty((m.shape[0], 4))
    out[:, 0] = m[:, 0] - w / 2
    out[:, 1] = m[:, 1] - h / 2
    out[:, 2] = m[:, 0] + w / 2
    out[:, 3] = m[:, 1] + h / 2
    return out


def initiate(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New tracks from measurements ``z [N,4]`` (xyah): ``mean [N,8]`` (zero velocity), ``cov [N,8,8]``."""
    n = z.shape[0]
    mean = np.zeros((n, 8))
    mean[:, :4] = z
    std = z[:, 3, None] * _INIT_W
    std[:, 2], std[:, 6] = 1e-2, 1e-5
    cov = np.zeros((n, 8, 8))
    cov[:, _I8, _I8] = std * std
    return mean, cov


def predict(mean: np.ndarray, cov: np.ndarray) -> None:
    """One step ahead, **in place**: ``mean [T,8]``, ``cov [T,8,8]``."""
    if mean.shape[0] == 0:
        return
    std = mean[:, 3, None] * _PRED_W  # noise from the height before the step
    std[:, 2], std[:, 6] = 1e-2, 1e-5
    mean[:, :4] += mean[:, 4:]
    cov[:, :4, :] += cov[:, 4:, :]  # F @ P
    cov[:, :, :4] += cov[:, :, 4:]  # (F @ P) @ F^T
    cov[:, _I8, _I8] += std * std


def update(mean: np.ndarray, cov: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct ``mean [T,8]``, ``cov [T,8,8]`` with measurements ``z [T,4]`` (xyah), row by row;
    returns new arrays."""
    if mean.shape[0] == 0:
        return mean, cov
    std = mean[:, 3, None] * _MEAS_W
    std[:, 2] = 1e-1
    s = cov[:, :4, :4].copy()  # H P H^T + R  [T,4,4]
    s[:, _I4, _I4] += std * std
    pht = cov[:, :, :4]  # P H^T  [T,8,4]
    # K = P H^T S^-1  <=>  S K^T = H P  (S symmetric)
    k = np.linalg.solve(s, pht.transpose(0, 2, 1)).transpose(0, 2, 1)  # [T,8,4]
    innov = z - mean[:, :4]
    mean = mean + np.matmul(k, innov[:, :, None])[:, :, 0]
    cov = cov - np.matmul(np.matmul(k, s), k.transpose(0, 2, 1))
    return mean, cov


kf = SimpleNamespace(xyxy_to_xyah=xyxy_to_xyah, xyah_to_xyxy=xyah_to_xyxy, initiate=initiate, predict=predict, update=update)

# ---- track.py ----

_NO_INT = np.zeros(0, dtype=np.int64)


@dataclass
class _Tracks:
    """Tracks of one source, as NumPy columns: ``mean [T,8]``, ``cov [T,8,8]`` (float64), ``tid [T]``
    (-1 while tentative), ``hits``/``tsu`` (hits, frames since update), ``cls [T]`` (int64),
    ``feat [T,E]`` (float32, unit rows; ``None`` without appearance)."""

    mean: np.ndarray = field(default_factory=lambda: np.zeros((0, 8)))
    cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 8, 8)))
    tid: np.ndarray = field(default_factory=lambda: _NO_INT)
    hits: np.ndarray = field(default_factory=lambda: _NO_INT)
    tsu: np.ndarray = field(default_factory=lambda: _NO_INT)
    cls: np.ndarray = field(default_factory=lambda: _NO_INT)
    feat: np.ndarray | None = None
    next_id: int = 0
    frames: int = 0
    last_frame: int | None = None

    def __len__(self) -> int:
        return self.tid.shape[0]



class ReferenceTracker:
    """Track objects per source; see the module docstring for the algorithm.

    Args:
        max_age: frames a confirmed track survives without a detection.
        min_hits: consecutive hits before a track is confirmed and gets an id.
        iou: minimum IoU between a track's predicted box and a detection to match them.
        high / low: ByteTrack thresholds; detections in ``[low, high)`` only continue tracks,
            those below ``low`` are ignored.
        appearance: attribute key of an embedding ``[N,E]`` (e.g. ``"embed.vector"``) to add an
            appearance cost; ``None`` = motion only.
        appearance_weight: weight of the appearance cost in ``[0, 1]``.
        per_class: only match detections of the track's class.
        assoc_device: ``"auto"``, ``"cpu"`` or ``"device"``; all three run the association on the
            host in NumPy (one transfer each way per batch), kept for configuration compatibility.
        name: stage name (prefix of ``"track.bbox"``).
    """

    host_stage = True          # its work is NumPy on the host: may run on the pipeline's tail thread

    def __init__(self, *, max_age: int = 30, min_hits: int = 3, iou: float = 0.3, high: float = 0.5,
                 low: float = 0.1, appearance: str | None = None, appearance_weight: float = 0.5,
                 per_class: bool = True, assoc_device: Literal["auto", "cpu", "device"] = "auto",
                 name: str = "track") -> None:
        if max_age < 0 or min_hits < 1:
            raise ValueError(f"Tracker: expected max_age >= 0 and min_hits >= 1, got {max_age}, {min_hits}")
        if not 0.0 <= iou <= 1.0:
            raise ValueError(f"Tracker: expected 0 <= iou <= 1, got {iou}")
        if not 0.0 <= low <= high:
            raise ValueError(f"Tracker: expected 0 <= low <= high, got low={low}, high={high}")
        if not 0.0 <= appearance_weight <= 1.0:
            raise ValueError(f"Tracker: expected 0 <= appearance_weight <= 1, got {appearance_weight}")
        if assoc_device not in ("auto", "cpu", "device"):
            raise ValueError(f"Tracker: assoc_device must be one of 'auto', 'cpu', 'device', got {assoc_device!r}")
        self.max_age, self.min_hits, self.iou = int(max_age), int(min_hits), float(iou)
        self.high, self.low = float(high), float(low)
        self.appearance, self.appearance_weight = appearance, float(appearance_weight)
        self.per_class, self.assoc_device, self.name = bool(per_class), assoc_device, name
        self._states: dict[int | str, _Tracks] = {}

    # lifecycle -------------------------------------------------------------------------------
    def reset(self, source_id: int | str | None = None) -> None:
        """Forget the tracks of ``source_id`` (all sources when ``None``); its ids restart at 0."""
        if source_id is None:
            self._states.clear()
        else:
            self._states.pop(source_id, None)

    def close(self) -> None:
        self.reset()

    def tracks(self, source_id: int | str) -> dict[str, torch.Tensor]:
        """Current tracks of a source (for inspection): ``{"object_id" [T], "bbox" [T,4] f32,
        "age_missed" [T]}``; tentative tracks have ``object_id == -1``."""
        st = self._states.get(source_id) or _Tracks()
        return {"object_id": torch.from_numpy(st.tid.copy()),
                "bbox": torch.from_numpy(kf.xyah_to_xyxy(st.mean).astype(np.float32)),
                "age_missed": torch.from_numpy(st.tsu.copy())}

    # the stage ---------------------------------------------------------------------------------
    def __call__(self, batch: Batch) -> Batch:
        objs = batch.objects
        n = len(objs)
        # one transfer in: [N,7] = frame_idx, confidence, class_id, bbox
        packed = torch.cat([objs.frame_idx[:, None].double(), objs.confidence[:, None].double(),
                            objs.class_id[:, None].double(), objs.bbox.double()], 1).cpu().numpy()
        feats = None
        if self.appearance is not None:
            if self.appearance not in objs.attrs:
                raise ValueError(f"Tracker(appearance={self.appearance!r}): the objects have no such attribute "
                                 f"(have {sorted(objs.attrs)}); put the embedding stage before the tracker")
            feats = objs.attrs[self.appearance].reshape(n, -1).to("cpu", torch.float32).numpy()
        # out: [N,6] = object_id, tracker_confidence, track box (detector box for untracked rows)
        out = np.zeros((n, 6))
        out[:, 0] = -1
        out[:, 2:6] = packed[:, 3:7]
        order = np.argsort(packed[:, 0], kind="stable")  # rows grouped by frame, frames in batch order
        bounds = np.searchsorted(packed[order, 0], np.arange(len(batch.frames) + 1) - 0.5)
        det = packed[order]
        det_feats = None if feats is None else feats[order]
        # waves: runs of consecutive frames of distinct sources, independent of each other
        start, seen = 0, set()
        for i, info in enumerate(batch.frames):
            if info.source_id in seen:
                self._wave(batch.frames[start:i], bounds[start:i + 1], order, det, det_feats, out)
                start, seen = i, set()
            seen.add(info.source_id)
        if batch.frames:
            self._wave(batch.frames[start:], bounds[start:], order, det, det_feats, out)
        res = torch.from_numpy(out).to(batch.device)
        new = objs.replace(object_id=res[:, 0].long(), tracker_confidence=res[:, 1].float(),
                           attrs={**objs.attrs, TRACKER_BBOX: res[:, 2:6].float().contiguous()})
        return batch.replace(objects=new)

    def _state(self, sid: int | str, frame_num: int) -> tuple[_Tracks, int]:
        """The source's tracks and the number of predict steps to this frame."""
        st = self._states.get(sid)
        if st is not None and st.last_frame is not None and frame_num < st.last_frame:
            st = None  # the source went back in time (restarted): start over
        if st is None:
            st = self._states[sid] = _Tracks()
        steps = 1 if st.last_frame is None else frame_num - st.last_frame
        st.last_frame = frame_num
        st.frames += 1
        return st, min(steps, self.max_age + 2)

    def _wave(self, infos: tuple, bounds: np.ndarray, order: np.ndarray, det: np.ndarray,
              det_feats: np.ndarray | None, out: np.ndarray) -> None:
        """One frame of each of ``G`` distinct sources, all at once. ``det [N,7]`` (rows sorted by
        frame; this wave's are ``bounds[0]:bounds[-1]``, frame ``g``'s ``bounds[g]:bounds[g+1]``),
        ``order [N]`` (batch row of each sorted row); writes ``out [N,6]`` (batch rows)."""
        g_n = len(infos)
        sts, steps = zip(*(self._state(f.source_id, f.frame_num) for f in infos))
        ntr = np.array([len(st) for st in sts])
        ndet = np.diff(bounds)
        d0 = bounds[0]
        rows, score = order[d0:bounds[-1]], det[d0:bounds[-1], 1]
        cls, boxes = det[d0:bounds[-1], 2].astype(np.int64), det[d0:bounds[-1], 3:7]
        feats = None if det_feats is None else det_feats[d0:bounds[-1]]
        n_t, n_d = int(ntr.sum()), len(rows)
        gt = np.repeat(np.arange(g_n), ntr)  # group (frame of the wave) of each track
        gd = np.repeat(np.arange(g_n), ndet)
        cat = (lambda xs: xs[0].copy()) if g_n == 1 else np.concatenate
        mean, cov = cat([st.mean for st in sts]), cat([st.cov for st in sts])
        tid, hits, tsu, tcls = (cat([getattr(st, k) for st in sts]) for k in ("tid", "hits", "tsu", "cls"))
        tfeat = None
        if feats is not None:
            e = feats.shape[1]
            tfeat = cat([st.feat if st.feat is not None else np.zeros((len(st), e), np.float32) for st in sts])
        # 1. predict (each track the steps of its source)
        if n_t:
            stp = np.array(steps)[gt]
            for k in range(int(stp.max())):
                sel = None if k < stp.min() else np.flatnonzero(stp > k)
                if sel is None:
                    mean[tsu > 0, 7] = 0.0  # no height velocity while lost (as ByteTrack)
                    kf.predict(mean, cov)
                    tsu += 1
                else:
                    m, c = mean[sel], cov[sel]
                    m[tsu[sel] > 0, 7] = 0.0
                    kf.predict(m, c)
                    mean[sel], cov[sel] = m, c
                    tsu[sel] += 1
        # 2. costs of every (track, detection) pair of the same frame, track-major per frame
        is_high = score >= self.high
        free_t, free_d = np.ones(n_t, dtype=bool), np.ones(n_d, dtype=bool)
        matched = []
        npair = ntr * ndet
        if npair.any():
            tstart, dstart = _starts(ntr), _starts(ndet)
            tb = kf.xyah_to_xyxy(mean)
            pt, pd = self._pairs(tb, boxes, gt, gd, ndet, dstart)
            iou = pair_iou(tb, boxes, pt, pd)
            # only pairs that some pass may match go on (IoU >= iou, same class): linear from here
            keep = iou >= self.iou
            if self.per_class:
                keep &= tcls[pt] == cls[pd]
            keep = np.flatnonzero(keep)
            pt, pd, iou = pt[keep], pd[keep], iou[keep]
            cost = 1.0 - iou
            if tfeat is not None and self.appearance_weight > 0 and len(keep):
                app = np.clip(1.0 - np.einsum("ij,ij->i", _unit(tfeat[pt].astype(np.float64)),
                                              _unit(feats[pd].astype(np.float64))), 0, 1)
                cost = (1 - self.appearance_weight) * cost + self.appearance_weight * app
            ok_a = cost <= 2.0  # False for NaN (as the old gating)
            confirmed = tid >= 0

            def run(tm: np.ndarray, dm: np.ndarray, ok: np.ndarray, c: np.ndarray) -> None:
                f = np.flatnonzero(ok & tm[pt] & dm[pd])
                if len(f) == 0:
                    return
                ct, cd = np.bincount(pt[f], minlength=n_t), np.bincount(pd[f], minlength=n_d)
                clash = np.zeros(g_n, dtype=bool)
                clash[gt[ct > 1]] = True
                clash[gd[cd > 1]] = True
                fg = gt[pt[f]]
                take = [f[~clash[fg]]]  # frames where no two allowed pairs share a row or column
                for g in np.flatnonzero(clash):  # the others: Hungarian on the frame's matrix
                    ts = np.flatnonzero(tm[tstart[g]:tstart[g + 1]]) + tstart[g]  # eligible rows
                    ds = np.flatnonzero(dm[dstart[g]:dstart[g + 1]]) + dstart[g]  # eligible columns
                    fp = f[fg == g]
                    ri, ci = np.searchsorted(ts, pt[fp]), np.searchsorted(ds, pd[fp])
                    dense = np.full((len(ts), len(ds)), BIG)
                    dense[ri, ci] = c[fp]
                    pair = np.zeros((len(ts), len(ds)), dtype=np.int64)
                    pair[ri, ci] = fp
                    r, k = match(dense)
                    take.append(pair[r, k])
                take = np.concatenate(take)
                matched.append(take)
                free_t[pt[take]] = False
                free_d[pd[take]] = False

            run(confirmed, is_high, ok_a, cost)
            low = (score >= self.low) & ~is_high
            if low.any():
                run(confirmed & free_t, low, iou >= max(self.iou, 0.5), 1.0 - iou)
            run(~confirmed, is_high & free_d, ok_a, cost)
        # 3. Kalman update of the matched tracks
        if matched:
            mp = np.concatenate(matched)
            t, d, ious = pt[mp], pd[mp], iou[mp]
            mean[t], cov[t] = kf.update(mean[t], cov[t], kf.xyxy_to_xyah(boxes[d]))
            hits[t] += 1
            tsu[t] = 0
            tcls[t] = cls[d]
            if tfeat is not None:
                tfeat[t] = _unit(0.9 * tfeat[t] + 0.1 * feats[d])
        else:
            t = d = _NO_INT
            ious = np.zeros(0)
        # 4. death: tentative tracks that missed, confirmed ones missed for more than max_age frames
        alive = np.where(tid >= 0, tsu <= self.max_age, tsu == 0)
        # 5. birth of the remaining high detections, appended after their source's tracks
        born = np.flatnonzero(is_high & free_d)
        nb = len(born)
        if nb:
            m0, c0 = kf.initiate(kf.xyxy_to_xyah(boxes[born]))
            one = np.ones(nb, dtype=np.int64)
            key = np.concatenate([gt, gd[born]])
            perm = np.argsort(key, kind="stable")
            inv = np.empty_like(perm)
            inv[perm] = np.arange(len(perm))
            mean, cov = np.concatenate([mean, m0])[perm], np.concatenate([cov, c0])[perm]
            tid, hits = np.concatenate([tid, -one])[perm], np.concatenate([hits, one])[perm]
            tsu, tcls = np.concatenate([tsu, 0 * one])[perm], np.concatenate([tcls, cls[born]])[perm]
            if tfeat is not None:
                tfeat = np.concatenate([tfeat, _unit(feats[born])])[perm]
            alive = np.concatenate([alive, one.astype(bool)])[perm]
            gt = key[perm]
            t = np.concatenate([inv[t], inv[n_t:]])
            d = np.concatenate([d, born])
            ious = np.concatenate([ious, np.ones(nb)])
        # 6. confirmation: ids in order of confirmation (track order), unique per source
        frames = np.array([st.frames for st in sts])
        promote = (tid < 0) & (tsu == 0) & ((hits >= self.min_hits) | (frames[gt] <= self.min_hits))
        if promote.any():
            p = np.flatnonzero(promote)
            pg = gt[p]
            next_id = np.array([st.next_id for st in sts])
            tid[p] = next_id[pg] + np.arange(len(p)) - np.searchsorted(pg, pg)
            for g, k in zip(*np.unique(pg, return_counts=True)):
                sts[g].next_id += int(k)
        # 7. outputs for detections on confirmed tracks
        if len(t):
            ok = tid[t] >= 0
            t, r = t[ok], rows[d[ok]]
            out[r, 0] = tid[t]
            out[r, 1] = ious[ok]
            out[r, 2:6] = kf.xyah_to_xyxy(mean[t])
        # 8. drop the dead, hand each source its tracks back
        if not alive.all():
            mean, cov, tid, hits, tsu, tcls, gt = (x[alive] for x in (mean, cov, tid, hits, tsu, tcls, gt))
            if tfeat is not None:
                tfeat = tfeat[alive]
        cuts = _starts(np.bincount(gt, minlength=g_n))
        for g, st in enumerate(sts):
            a, b = cuts[g], cuts[g + 1]
            st.mean, st.cov, st.tid, st.hits, st.tsu, st.cls = (
                mean[a:b], cov[a:b], tid[a:b], hits[a:b], tsu[a:b], tcls[a:b])
            if tfeat is not None:
                st.feat = tfeat[a:b]

    def _pairs(self, tb: np.ndarray, boxes: np.ndarray, gt: np.ndarray, gd: np.ndarray, ndet: np.ndarray,
               dstart: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate (track, detection) pairs of the same frame: ``tb [T,4]``, ``boxes [D,4]`` (xyxy),
        groups ``gt [T]``, ``gd [D]`` -> ``(pt [P], pd [P])``. With ``iou > 0`` only pairs whose x
        ranges may overlap (others have IoU 0 and are never matched), found by sorting the
        detections by (frame, x1): O((T + D) log D + P) instead of every pair of the frame."""
        if self.iou <= 0 or not len(boxes):
            nd_t = ndet[gt]
            pt = np.repeat(np.arange(len(tb)), nd_t)
            return pt, np.arange(len(pt)) + np.repeat(dstart[gt] - _starts(nd_t)[:-1], nd_t)
        w = boxes[:, 2] - boxes[:, 0]
        maxw = np.zeros(len(ndet))
        np.maximum.at(maxw, gd, w)
        off = min(boxes[:, 0].min(), tb[:, 0].min()) - maxw.max() - 1.0
        span = max(boxes[:, 2].max(), tb[:, 2].max()) - off + 1.0
        key = gd * span + (boxes[:, 0] - off)
        srt = np.argsort(key, kind="stable")
        key = key[srt]
        lo = np.searchsorted(key, gt * span + (tb[:, 0] - maxw[gt] - off), side="left")
        hi = np.searchsorted(key, gt * span + (tb[:, 2] - off), side="left")
        cnt = np.maximum(hi - lo, 0)
        pt = np.repeat(np.arange(len(tb)), cnt)
        return pt, srt[np.arange(len(pt)) + np.repeat(lo - _starts(cnt)[:-1], cnt)]


def _starts(counts: np.ndarray) -> np.ndarray:
    """``[G]`` counts -> ``[G+1]`` offsets (0, c0, c0+c1, ...)."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x [N,E]`` over their L2 norm (at least 1e-12), as ``torch.nn.functional.normalize``."""
    return x / np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), 1e-12)[:, None]
