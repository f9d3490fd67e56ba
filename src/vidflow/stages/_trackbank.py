"""The tracker's state for every source at once: one set of NumPy columns over all tracks.

Tracks of all sources live in flat columns (``mean [T,8]``, ``cov [T,4,4]`` in the Kalman
filter's block form, ``tid``, ``hits``, ``tsu``, ``cls``, ``slot [T]``, optional ``feat [T,E]``);
per-source counters (next id, frames seen, last frame number) are arrays indexed by the source's
slot. A batch takes the tracks of a set of sources with one gather (``take``) and puts the
survivors and births back with one concatenation (``put``), whatever the number of sources: no
Python object per source or per track.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Bank", "Columns", "starts"]


def starts(counts: np.ndarray) -> np.ndarray:
    """``[G]`` counts -> ``[G+1]`` offsets (0, c0, c0+c1, ...)."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def ranges(first: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(first[g], first[g] + counts[g])`` over ``g``, without a loop."""
    total = int(counts.sum())
    return np.arange(total) + np.repeat(first - starts(counts)[:-1], counts)


@dataclass
class Columns:
    """Tracks as columns (``T`` rows): what ``Bank.take`` returns and ``Bank.put`` stores."""

    mean: np.ndarray            # [T,8] float64
    cov: np.ndarray             # [T,4,4] float64 (see _kalman)
    tid: np.ndarray             # [T] int64, -1 while tentative
    hits: np.ndarray            # [T] int64
    tsu: np.ndarray             # [T] int64, frames since the last update
    cls: np.ndarray             # [T] int64
    feat: np.ndarray | None     # [T,E] float32 unit rows, or None without appearance

    def __len__(self) -> int:
        return self.tid.shape[0]

    def rows(self, idx: np.ndarray) -> Columns:
        return Columns(self.mean[idx], self.cov[idx], self.tid[idx], self.hits[idx], self.tsu[idx],
                       self.cls[idx], None if self.feat is None else self.feat[idx])


def _empty() -> Columns:
    z = np.zeros(0, dtype=np.int64)
    return Columns(np.zeros((0, 8)), np.zeros((0, 4, 4)), z, z, z, z, None)


class Bank:
    """Tracks of every source (see the module text). ``slot_of(sids)`` maps source ids to slots
    (new ones get a fresh slot); ``take(slots)`` / ``put(slots, cols, group)`` move the tracks of
    distinct slots out and back; ``drop(sid)`` forgets a source."""

    def __init__(self) -> None:
        self.cols = _empty()
        self.slot = np.zeros(0, dtype=np.int64)      # [T] the slot of each track
        self.ids: dict[int | str, int] = {}
        self._free: list[int] = []
        self.next_id = np.zeros(0, dtype=np.int64)   # [S] per slot
        self.frames = np.zeros(0, dtype=np.int64)    # [S] frames seen since the source (re)started
        self.last = np.zeros(0, dtype=np.int64)      # [S] last frame number, -1 = none yet

    # -- sources ------------------------------------------------------------------------------
    def slot_of(self, sids: list[int | str]) -> np.ndarray:
        """Slots of the batch's source ids (one dict look-up each; new sources get a slot)."""
        ids = self.ids
        return np.fromiter((ids[s] if s in ids else self._new(s) for s in sids), dtype=np.int64, count=len(sids))

    def _new(self, sid: int | str) -> int:
        if not self._free:                      # grow the per-slot arrays (doubling)
            n = len(self.next_id)
            grow = max(8, n)
            self.next_id = np.r_[self.next_id, np.zeros(grow, np.int64)]
            self.frames = np.r_[self.frames, np.zeros(grow, np.int64)]
            self.last = np.r_[self.last, np.full(grow, -1, np.int64)]
            self._free = list(range(n + grow - 1, n - 1, -1))      # pop() hands out n first
        s = self._free.pop()
        self.ids[sid] = s
        self.restart(np.array([s]))
        return s

    def restart(self, slots: np.ndarray) -> None:
        """These slots start over: no tracks, ids from 0, no frame seen."""
        if len(self.slot) and len(slots):
            keep = ~np.isin(self.slot, slots)
            if not keep.all():
                self.cols, self.slot = self.cols.rows(keep), self.slot[keep]
        self.next_id[slots] = 0
        self.frames[slots] = 0
        self.last[slots] = -1

    def drop(self, sid: int | str | None) -> None:
        """Forget one source (its slot is reused), or every source when ``sid`` is None."""
        if sid is None:
            self.cols, self.slot = _empty(), np.zeros(0, dtype=np.int64)
            self._free.extend(self.ids.values())
            self.ids.clear()
            return
        s = self.ids.pop(sid, None)
        if s is not None:
            self.restart(np.array([s]))
            self._free.append(s)

    # -- tracks -------------------------------------------------------------------------------
    def take(self, slots: np.ndarray) -> tuple[Columns, np.ndarray]:
        """The tracks of the distinct ``slots [G]``, grouped by slot in that order (each source's
        tracks in their stored order), and ``counts [G]``."""
        if not len(self.slot):
            return _empty(), np.zeros(len(slots), dtype=np.int64)
        n_slots = len(self.next_id)
        order = np.argsort(self.slot, kind="stable")
        cnt = np.bincount(self.slot, minlength=n_slots)
        counts = cnt[slots]
        idx = order[ranges(starts(cnt)[slots], counts)]
        return self.cols.rows(idx), counts

    def put(self, slots: np.ndarray, cols: Columns, group: np.ndarray) -> None:
        """Replace the tracks of the distinct ``slots [G]`` by ``cols`` (``group [T]``: index into
        ``slots`` of each row)."""
        if len(self.slot):
            keep = ~np.isin(self.slot, slots)
            old, old_slot = self.cols.rows(keep), self.slot[keep]
            if len(old_slot):
                self.cols = _concat(old, cols)
                self.slot = np.concatenate([old_slot, slots[group]])
                return
        self.cols, self.slot = cols, slots[group]

    def tracks_of(self, sid: int | str) -> Columns:
        s = self.ids.get(sid)
        if s is None:
            return _empty()
        return self.cols.rows(np.flatnonzero(self.slot == s))


def _concat(a: Columns, b: Columns) -> Columns:
    if a.feat is None and b.feat is None:
        feat = None
    else:
        e = (a.feat if a.feat is not None else b.feat).shape[1]  # type: ignore[union-attr]
        fa = a.feat if a.feat is not None else np.zeros((len(a), e), np.float32)
        fb = b.feat if b.feat is not None else np.zeros((len(b), e), np.float32)
        feat = np.concatenate([fa, fb])
    return Columns(np.concatenate([a.mean, b.mean]), np.concatenate([a.cov, b.cov]),
                   np.concatenate([a.tid, b.tid]), np.concatenate([a.hits, b.hits]),
                   np.concatenate([a.tsu, b.tsu]), np.concatenate([a.cls, b.cls]), feat)
