"""``Tracker``: multi-object tracking per source (Kalman motion + IoU/appearance association,
ByteTrack's second pass for low-confidence boxes, SORT-style birth and death).

Per frame of a source, in batch order:

1. every track is predicted to the frame (constant velocity; several steps if frames were skipped);
2. detections with ``confidence >= high`` are matched to the confirmed tracks (active and lost)
   by Hungarian assignment on ``1 - IoU`` (plus ``appearance_weight * (1 - cosine)`` of an
   embedding attribute when ``appearance`` is set); pairs with IoU < ``iou`` or different
   classes are never matched;
3. confirmed tracks still unmatched are matched to the low-confidence detections
   (``low <= confidence < high``), IoU only, IoU >= max(``iou``, 0.5). Unlike ByteTrack, lost
   tracks take part too: an object coming out from behind another is often half hidden and
   scores low (on the occlusion tests this halved the misses);
4. tentative tracks are matched to the remaining high detections;
5. tentative tracks that missed are dropped, confirmed ones are dropped after ``max_age`` missed
   frames; remaining high detections start tentative tracks. A track is confirmed (gets an id)
   after ``min_hits`` consecutive hits, or at once during the first ``min_hits`` frames of a
   source.

Object ids are unique **per source** (each source counts 0, 1, 2, ... in order of confirmation;
``(source_id, object_id)`` is the global key). A detection that is not on a confirmed track keeps
``object_id = -1`` and ``tracker_confidence = 0``. The detector's box stays in ``bbox``; the
tracker's filtered box goes to ``attrs["track.bbox"]`` (the detector box for untracked rows);
``tracker_confidence`` is the IoU of the detection with the track's predicted box (1 for a new
track). ``reset(source_id)`` drops a source's tracks (the pipeline calls it when a source ends).

Association runs on the host, in NumPy, for **all streams at once**: the batch's detections
cross to the host once per batch (one ``[N,7]`` float64 copy) and the results go back to
``batch.device`` once (one ``[N,6]`` copy); no torch op runs per frame. The tracks of every
source live in one set of columns (``_trackbank.Bank``). The frames of a batch are processed in
*waves*: wave ``k`` holds the ``k``-th frame of each source in the batch (a batch of 64 frames of
64 sources is one wave); each wave's Kalman predict/update (block-diagonal covariances:
``_kalman``), IoU of the candidate (track, detection) pairs, gating, births, deaths and id
assignment are single NumPy operations over all its frames, with one gather of the sources'
tracks before and one concatenation after. Candidate pairs come from a sort of the detections by
(frame, x1), so the cost is linear in the objects per frame (pairs whose x ranges do not overlap
have IoU 0 and could never match; with ``iou=0`` every pair of a frame is kept). Within a pass,
frames where no two allowed pairs share a track or a detection take those pairs directly (they are
the optimum); only the others run ``scipy.optimize.linear_sum_assignment`` on the frame's matrix.
The ids and boxes are those of the per-source version this replaced
(``tests/reference/track_v1.py``, checked by ``tests/unit/test_track_reference.py``);
``benchmarks/track.py`` prints both side by side.
"""

from __future__ import annotations

import numpy as np
import torch

from ..batch import TRACKER_BBOX, Batch
from . import _kalman as kf
from ._assign import BIG, match, pair_iou
from ._trackbank import Bank, Columns, ranges
from ._trackbank import starts as _starts

__all__ = ["Tracker"]

_NO_INT = np.zeros(0, dtype=np.int64)


class Tracker:
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
        name: stage name (prefix of ``"track.bbox"``).
    """

    host_stage = True          # its work is NumPy on the host: may run on the pipeline's tail thread

    #: objects (and their masks) go through unchanged; the tracker reads no masks (``stages.base``)
    reads_masks = False

    def __init__(self, *, max_age: int = 30, min_hits: int = 3, iou: float = 0.3, high: float = 0.5,
                 low: float = 0.1, appearance: str | None = None, appearance_weight: float = 0.5,
                 per_class: bool = True, name: str = "track") -> None:
        if max_age < 0 or min_hits < 1:
            raise ValueError(f"Tracker: expected max_age >= 0 and min_hits >= 1, got {max_age}, {min_hits}")
        if not 0.0 <= iou <= 1.0:
            raise ValueError(f"Tracker: expected 0 <= iou <= 1, got {iou}")
        if not 0.0 <= low <= high:
            raise ValueError(f"Tracker: expected 0 <= low <= high, got low={low}, high={high}")
        if not 0.0 <= appearance_weight <= 1.0:
            raise ValueError(f"Tracker: expected 0 <= appearance_weight <= 1, got {appearance_weight}")
        self.max_age, self.min_hits, self.iou = int(max_age), int(min_hits), float(iou)
        self.high, self.low = float(high), float(low)
        self.appearance, self.appearance_weight = appearance, float(appearance_weight)
        self.per_class, self.name = bool(per_class), name
        self._bank = Bank()

    # lifecycle -------------------------------------------------------------------------------
    def reset(self, source_id: int | str | None = None) -> None:
        """Forget the tracks of ``source_id`` (all sources when ``None``); its ids restart at 0."""
        self._bank.drop(source_id)

    def close(self) -> None:
        self.reset()

    def tracks(self, source_id: int | str) -> dict[str, torch.Tensor]:
        """Current tracks of a source (for inspection): ``{"object_id" [T], "bbox" [T,4] f32,
        "age_missed" [T]}``; tentative tracks have ``object_id == -1``."""
        c = self._bank.tracks_of(source_id)
        return {"object_id": torch.from_numpy(c.tid.copy()),
                "bbox": torch.from_numpy(kf.xyah_to_xyxy(c.mean).astype(np.float32)),
                "age_missed": torch.from_numpy(c.tsu.copy())}

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
        frames = batch.frames
        if n and frames:
            fi = packed[:, 0]                            # from int64: always whole numbers
            if fi.min() < 0 or fi.max() > len(frames) - 1:
                # every row must belong to one of the batch's frames (a seg bench run on the H200
                # once failed deep in the association with an IndexError: this says what came in)
                raise ValueError(f"{self.name}: the objects' frame_idx must index the batch's {len(frames)} "
                                 f"frames, got values from {fi.min():g} to {fi.max():g} "
                                 f"({int(((fi < 0) | (fi > len(frames) - 1)).sum())} of {n} rows outside)")
        if frames:
            order = np.argsort(packed[:, 0], kind="stable")  # rows grouped by frame, frames in batch order
            bounds = np.searchsorted(packed[order, 0], np.arange(len(frames) + 1) - 0.5)
            det = packed[order]
            det_feats = None if feats is None else feats[order]
            slots = self._bank.slot_of([f.source_id for f in frames])
            fnum = np.fromiter((f.frame_num for f in frames), dtype=np.int64, count=len(frames))
            # wave k: the k-th frame of each source in the batch (sources are independent)
            by_slot = np.argsort(slots, kind="stable")
            srt = slots[by_slot]
            wave = np.empty(len(frames), dtype=np.int64)
            wave[by_slot] = np.arange(len(frames)) - np.searchsorted(srt, srt, side="left")
            if not wave.any():                # the usual case: one frame per source
                self._wave(np.arange(len(frames)), slots, fnum, bounds, order, det, det_feats, out)
            else:
                for k in range(int(wave.max()) + 1):
                    self._wave(np.flatnonzero(wave == k), slots, fnum, bounds, order, det, det_feats, out)
        res = torch.from_numpy(out).to(batch.device)
        new = objs.replace(object_id=res[:, 0].long(), tracker_confidence=res[:, 1].float(),
                           attrs={**objs.attrs, TRACKER_BBOX: res[:, 2:6].float().contiguous()})
        return batch.replace(objects=new)

    def _advance(self, sl: np.ndarray, fn: np.ndarray) -> np.ndarray:
        """Sources ``sl [G]`` (distinct slots) reach frames ``fn [G]``: a source that went back in
        time (restarted) starts over; returns the predict steps of each (at most max_age + 2)."""
        bank = self._bank
        last = bank.last[sl]
        back = (last >= 0) & (fn < last)
        if back.any():
            bank.restart(sl[back])
            last = bank.last[sl]
        steps = np.where(last < 0, 1, fn - last)
        bank.last[sl] = fn
        bank.frames[sl] += 1
        return np.minimum(steps, self.max_age + 2)

    def _wave(self, fw: np.ndarray, slots: np.ndarray, fnum: np.ndarray, bounds: np.ndarray,
              order: np.ndarray, det: np.ndarray, det_feats: np.ndarray | None, out: np.ndarray) -> None:
        """One frame of each of ``G`` distinct sources, all at once: batch frames ``fw [G]``
        (increasing), ``slots``/``fnum [B]`` (bank slot and frame number of every batch frame),
        ``det [N,7]`` (rows sorted by frame; frame ``i``'s are ``bounds[i]:bounds[i+1]``),
        ``order [N]`` (batch row of each sorted row); writes ``out [N,6]`` (batch rows)."""
        bank = self._bank
        g_n = len(fw)
        sl = slots[fw]
        steps = self._advance(sl, fnum[fw])
        ndet = bounds[fw + 1] - bounds[fw]
        # the wave's detections (sorted rows): all of them when the wave is the whole batch
        sel: slice | np.ndarray = slice(None) if g_n == len(slots) else ranges(bounds[fw], ndet)
        rows, score = order[sel], det[sel, 1]
        cls, boxes = det[sel, 2].astype(np.int64), det[sel, 3:7]
        feats = None if det_feats is None else det_feats[sel]
        cols, ntr = bank.take(sl)
        n_t, n_d = len(cols), len(rows)
        gt = np.repeat(np.arange(g_n), ntr)  # group (frame of the wave) of each track
        gd = np.repeat(np.arange(g_n), ndet)
        mean, cov, tid, hits, tsu, tcls = cols.mean, cols.cov, cols.tid, cols.hits, cols.tsu, cols.cls
        tfeat = None
        if feats is not None:
            tfeat = cols.feat if cols.feat is not None else np.zeros((n_t, feats.shape[1]), np.float32)
        # 1. predict (each track the steps of its source)
        if n_t:
            stp = steps[gt]
            for k in range(int(stp.max())):
                sel_k = None if k < stp.min() else np.flatnonzero(stp > k)
                if sel_k is None:
                    mean[tsu > 0, 7] = 0.0  # no height velocity while lost (as ByteTrack)
                    kf.predict(mean, cov)
                    tsu += 1
                else:
                    m, c = mean[sel_k], cov[sel_k]
                    m[tsu[sel_k] > 0, 7] = 0.0
                    kf.predict(m, c)
                    mean[sel_k], cov[sel_k] = m, c
                    tsu[sel_k] += 1
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
            allowed = iou >= self.iou
            if self.per_class:
                allowed &= tcls[pt] == cls[pd]
            keep = np.flatnonzero(allowed)
            pt, pd, iou = pt[keep], pd[keep], iou[keep]
            cost = 1.0 - iou
            if tfeat is not None and feats is not None and self.appearance_weight > 0 and len(keep):
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
                parts = [f[~clash[fg]]]  # frames where no two allowed pairs share a row or column
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
                    parts.append(pair[r, k])
                take = np.concatenate(parts)
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
            if tfeat is not None and feats is not None:
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
            if tfeat is not None and feats is not None:
                tfeat = np.concatenate([tfeat, _unit(feats[born])])[perm]
            alive = np.concatenate([alive, one.astype(bool)])[perm]
            gt = key[perm]
            t = np.concatenate([inv[t], inv[n_t:]])
            d = np.concatenate([d, born])
            ious = np.concatenate([ious, np.ones(nb)])
        # 6. confirmation: ids in order of confirmation (track order), unique per source
        frames = bank.frames[sl]
        promote = (tid < 0) & (tsu == 0) & ((hits >= self.min_hits) | (frames[gt] <= self.min_hits))
        if promote.any():
            p = np.flatnonzero(promote)
            pg = gt[p]
            tid[p] = bank.next_id[sl][pg] + np.arange(len(p)) - np.searchsorted(pg, pg)
            bank.next_id[sl] += np.bincount(pg, minlength=g_n)
        # 7. outputs for detections on confirmed tracks
        if len(t):
            ok = tid[t] >= 0
            t, r = t[ok], rows[d[ok]]
            out[r, 0] = tid[t]
            out[r, 1] = ious[ok]
            out[r, 2:6] = kf.xyah_to_xyxy(mean[t])
        # 8. drop the dead, put the wave's tracks back (grouped by source, in track order)
        kept = Columns(mean, cov, tid, hits, tsu, tcls, tfeat)
        if not alive.all():
            kept, gt = kept.rows(alive), gt[alive]
        bank.put(sl, kept, gt)

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


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x [N,E]`` over their L2 norm (at least 1e-12), as ``torch.nn.functional.normalize``."""
    return x / np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), 1e-12)[:, None]
