"""A gallery of known identities (name -> one or more embeddings) and the ``identify`` stage.

``Gallery`` keeps all enrolled vectors L2-normalised in one ``[M, D]`` matrix, moved once to the
device of the queries; ``search`` scores all queries of a batch against it in one matmul
(cosine similarity) and reduces per identity (best vector) on the device. With a ``path`` the
gallery lives in an SQLite file (vectors as float32 blobs), loaded at start and written through
on every ``enrol`` / ``remove``, so it survives restarts and can be edited with
``vidflow gallery add|list|remove`` while nothing else writes it.

Identities have stable ids: 0, 1, 2 ... in enrolment order, never reused nor shifted (removing
one leaves a gap; in a database file the id is its row id - 1, so ids survive restarts and
``vidflow gallery remove``). -1 means unknown. :meth:`Gallery.labels` is the id -> name table the
``identify`` stage puts in ``batch.labels``, so outputs carry names. An identity may have a class
(``enrol(..., class_id=2)``): it then only matches objects of that class.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

import numpy as np
import torch

from .batch import Batch

__all__ = ["Gallery", "Identify"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL,
    class_id INTEGER);
CREATE TABLE IF NOT EXISTS vectors (id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE, dim INTEGER NOT NULL, data BLOB NOT NULL);
"""


def _as_matrix(vectors: Any) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(vectors) if not isinstance(vectors, torch.Tensor) else vectors)
    if v.dim() == 1:
        v = v[None]
    if v.dim() != 2 or v.shape[0] == 0 or v.shape[1] == 0:
        raise ValueError(f"Gallery: vectors expected shape (K, D) or (D,), got {tuple(v.shape)}")
    v = v.detach().to("cpu", torch.float32)
    if not torch.isfinite(v).all() or (v.norm(dim=1) == 0).any():
        raise ValueError("Gallery: vectors must be finite and non-zero")
    return torch.nn.functional.normalize(v, dim=1)


class Gallery:
    """Known identities and their embeddings.

    Args:
        path: SQLite file to load from and persist to (created if missing); ``None`` = in memory.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self._lock = threading.Lock()
        self._names: list[str] = []
        self._ids: list[int] = []                 # stable id of each name (same order)
        self._classes: list[int] = []             # class of each name, -1: any
        self._next_id = 0
        self._vecs = torch.zeros(0, 0)            # [M, D] float32 CPU, unit rows
        self._owner = torch.zeros(0, dtype=torch.int64)  # [M] identity index of each row
        self._dev_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.executescript(_SCHEMA)
            cols = [r[1] for r in self._db.execute("PRAGMA table_info(identities)")]
            if "class_id" not in cols:            # a gallery file from before identity classes
                self._db.execute("ALTER TABLE identities ADD COLUMN class_id INTEGER")
            self._db.commit()
            self.reload()

    # persistence -----------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the database file (e.g. after ``vidflow gallery add`` from another process)."""
        if self._db is None:
            return
        with self._lock:
            rows = self._db.execute("SELECT i.id, i.name, i.class_id, v.dim, v.data FROM identities i JOIN vectors v "
                                    "ON v.identity = i.id ORDER BY i.id, v.id").fetchall()
            names: list[str] = []
            ids: list[int] = []
            classes: list[int] = []
            vecs, owner = [], []
            for rid, name, cls, dim, blob in rows:
                if not names or names[-1] != name:
                    names.append(name)
                    ids.append(int(rid) - 1)
                    classes.append(-1 if cls is None else int(cls))
                vecs.append(np.frombuffer(blob, dtype=np.float32, count=dim))
                owner.append(len(names) - 1)
            seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'identities'").fetchone()
            self._names, self._ids, self._classes = names, ids, classes
            self._next_id = int(seq[0]) if seq else 0
            if vecs:
                if len({len(v) for v in vecs}) != 1:
                    raise ValueError(f"Gallery {self.path}: vectors of different sizes in the database")
                self._vecs = torch.from_numpy(np.stack(vecs).copy())
            else:
                self._vecs = torch.zeros(0, 0)
            self._owner = torch.tensor(owner, dtype=torch.int64)
            self._dev_cache.clear()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # editing -----------------------------------------------------------------------------------
    def enrol(self, name: str, vectors: Any, *, class_id: int | None = None) -> int:
        """Add ``vectors [K, D]`` (or ``[D]``; any device, normalised here) to identity ``name``
        (created if new; ``class_id``: the only object class it matches, None: any). Returns the
        identity's stable id."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"Gallery.enrol: name must be a non-empty string, got {name!r}")
        v = _as_matrix(vectors)
        with self._lock:
            if self._vecs.numel() and v.shape[1] != self._vecs.shape[1]:
                raise ValueError(f"Gallery.enrol: vectors have D={v.shape[1]}, the gallery holds D={self._vecs.shape[1]}")
            cls = -1 if class_id is None else int(class_id)
            known = name in self._names
            if known and class_id is not None and self._classes[self._names.index(name)] != cls:
                raise ValueError(f"Gallery.enrol: {name!r} has class {self._classes[self._names.index(name)]}, "
                                 f"not {cls}")
            ident = self._ids[self._names.index(name)] if known else self._next_id
            if self._db is not None:
                if not known:
                    cur = self._db.execute("INSERT INTO identities(name, class_id) VALUES (?, ?)", (name, class_id))
                    assert cur.lastrowid is not None        # (an INSERT has one)
                    ident = int(cur.lastrowid) - 1
                self._db.executemany("INSERT INTO vectors(identity, dim, data) VALUES (?, ?, ?)",
                                     [(ident + 1, v.shape[1], row.numpy().tobytes()) for row in v])
                self._db.commit()
            if not known:
                self._names.append(name)
                self._ids.append(ident)
                self._classes.append(cls)
                self._next_id = ident + 1
            idx = self._names.index(name)
            self._vecs = v.clone() if not self._vecs.numel() else torch.cat([self._vecs, v])
            self._owner = torch.cat([self._owner, torch.full((v.shape[0],), idx, dtype=torch.int64)])
            self._dev_cache.clear()
            return ident

    enroll = enrol

    def remove(self, name: str) -> bool:
        """Forget ``name`` and its vectors; ``False`` if it was not enrolled. The other identities
        keep their ids."""
        with self._lock:
            if name not in self._names:
                return False
            if self._db is not None:
                self._db.execute("DELETE FROM identities WHERE name = ?", (name,))
                self._db.commit()
            idx = self._names.index(name)
            keep = self._owner != idx
            self._names.pop(idx)
            self._ids.pop(idx)
            self._classes.pop(idx)
            self._vecs = self._vecs[keep] if keep.any() else torch.zeros(0, 0)
            owner = self._owner[keep]
            self._owner = owner - (owner > idx).long()
            self._dev_cache.clear()
            return True

    # queries -----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Identity names, in enrolment order."""
        return list(self._names)

    def ids(self) -> dict[str, int]:
        """Each name's stable id."""
        return dict(zip(self._names, self._ids))

    def labels(self) -> tuple[str, ...]:
        """The id -> name table (``labels()[id]``; ``""`` for ids removed)."""
        out = [""] * (max(self._ids) + 1 if self._ids else 0)
        for name, i in zip(self._names, self._ids):
            out[i] = name
        return tuple(out)

    def counts(self) -> dict[str, int]:
        """Vectors enrolled per name."""
        c = torch.bincount(self._owner, minlength=len(self._names)).tolist() if self._names else []
        return dict(zip(self._names, c))

    def __len__(self) -> int:
        return len(self._names)

    @property
    def dim(self) -> int | None:
        return int(self._vecs.shape[1]) if self._vecs.numel() else None

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        got = self._dev_cache.get(device)
        if got is None:
            got = self._dev_cache[device] = (self._vecs.to(device), self._owner.to(device),
                                             torch.tensor(self._ids, dtype=torch.int64).to(device),
                                             torch.tensor(self._classes, dtype=torch.int64).to(device))
        return got

    def search(self, vectors: torch.Tensor, k: int = 1, *,
               classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` identities of each query ``vectors [N, D]`` by cosine similarity (an
        identity scores its best vector). ``classes [N]``: each query's object class; an identity
        with a class matches only queries of that class. Returns ``(ids [N, k] int64,
        similarities [N, k] float32)`` on the queries' device; slots beyond the gallery size are
        ``-1`` / ``-inf``."""
        if k < 1:
            raise ValueError(f"Gallery.search: k must be >= 1, got {k}")
        q = torch.as_tensor(vectors)
        if q.dim() != 2:
            raise ValueError(f"Gallery.search: vectors expected shape (N, D), got {tuple(q.shape)}")
        dev, n = q.device, q.shape[0]
        with self._lock:
            ident = len(self._names)
            if ident and q.shape[1] != self._vecs.shape[1]:
                raise ValueError(f"Gallery.search: vectors have D={q.shape[1]}, the gallery holds D={self._vecs.shape[1]}")
            tables = self._on(dev) if ident else None
        idx = torch.full((n, k), -1, dtype=torch.int64, device=dev)
        sim = torch.full((n, k), float("-inf"), dtype=torch.float32, device=dev)
        if tables is None or n == 0:
            return idx, sim
        vecs, owner, ids, cls = tables
        s = torch.nn.functional.normalize(q.float(), dim=1) @ vecs.T  # [N, M]: the one matmul
        per = torch.full((n, ident), float("-inf"), device=dev).scatter_reduce(
            1, owner.expand(n, -1), s, reduce="amax")  # [N, I]
        if classes is not None:
            q_cls = torch.as_tensor(classes, device=dev).long().view(-1, 1)
            per = per.masked_fill((cls[None, :] >= 0) & (cls[None, :] != q_cls), float("-inf"))
        kk = min(k, ident)
        top_s, top_i = per.topk(kk, dim=1)
        idx[:, :kk] = torch.where(torch.isfinite(top_s), ids[top_i], torch.full_like(top_i, -1))
        sim[:, :kk] = top_s
        return idx, sim

    def __repr__(self) -> str:
        return f"Gallery({self.path or 'memory'}, identities={len(self)}, vectors={self._vecs.shape[0]}, dim={self.dim})"


class Identify:
    """Stage: match each object's embedding against a gallery.

    Writes ``attrs["<name>.identity"]`` ``[N]`` int64 (the identity's stable id, a position in
    ``batch.labels[name]`` = ``gallery.labels()``, so outputs show the name; -1 when the best
    similarity is below ``threshold``, the object has no embedding (a zero vector), or no
    identity of its class is enrolled) and ``attrs["<name>.similarity"]`` ``[N]`` float32 (best
    cosine similarity, -inf for an empty gallery).

    Args:
        gallery: a ``Gallery`` or the path of its SQLite file.
        threshold: minimum cosine similarity to accept an identity.
        source: attribute holding the embeddings ``[N, D]``.
        match_class: an identity enrolled with a class matches only objects of that class.
        name: stage name, the attribute prefix.
    """

    reads_masks = False        # embeddings only (``stages.base.ReadsMasks``)

    def __init__(self, gallery: Gallery | str | os.PathLike, *, threshold: float = 0.6,
                 source: str = "embed.vector", match_class: bool = True, name: str = "identify") -> None:
        self._owns = not isinstance(gallery, Gallery)
        if not isinstance(gallery, Gallery):
            if not isinstance(gallery, (str, os.PathLike)):
                raise ValueError(f"Identify: gallery expected a Gallery or a path, got {type(gallery).__name__}")
            gallery = Gallery(gallery)
        if not -1.0 <= float(threshold) <= 1.0:
            raise ValueError(f"Identify: threshold must be in [-1, 1], got {threshold}")
        self.gallery: Gallery = gallery
        self.threshold, self.source, self.name = float(threshold), source, name
        self.match_class = bool(match_class)

    def __call__(self, batch: Batch) -> Batch:
        objs = batch.objects
        if self.source not in objs.attrs:
            raise ValueError(f"Identify: the objects have no {self.source!r} attribute (have {sorted(objs.attrs)}); "
                             "put an embed stage before identify")
        v = objs.attrs[self.source].flatten(1)
        idx, sim = self.gallery.search(v, k=1, classes=objs.class_id if self.match_class else None)
        idx, sim = idx[:, 0], sim[:, 0]
        has = v.abs().sum(1) > 0
        ok = has & (sim >= self.threshold)
        ident = torch.where(ok, idx, torch.full_like(idx, -1))
        sim = torch.where(has, sim, torch.zeros_like(sim))
        new = objs.with_attrs(**{f"{self.name}.identity": ident, f"{self.name}.similarity": sim})
        return batch.replace(objects=new, labels={**batch.labels, self.name: self.gallery.labels()})

    def close(self) -> None:
        if self._owns:  # a gallery given as an object belongs to the caller
            self.gallery.close()

