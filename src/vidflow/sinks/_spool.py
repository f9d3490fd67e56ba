"""The broker sink's spool: messages waiting for the broker, bounded, in order.

:class:`DiskSpool` is one SQLite database in WAL mode (``synchronous=NORMAL``: every committed
append survives a crash or SIGKILL of the process; a power loss may lose the last commits). It
also keeps each source's next sequence number, so ``(source-id, seq)`` keeps growing across
restarts and consumers can de-duplicate. :class:`MemorySpool` is the same without the disk
(used when ``spool=None``: nothing survives a restart).

When full (``max_messages`` or ``max_bytes``), the declared policy applies: ``drop_oldest``
deletes the oldest messages, ``drop_newest`` refuses the new ones; either way they are counted
(``dropped``) and logged (once per 1,000).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Literal

__all__ = ["DiskSpool", "MemorySpool", "Row", "ON_FULL"]

log = logging.getLogger(__name__)
Row = tuple[int, str, str, bytes]   # (id, topic, key, payload)
ON_FULL = ("drop_oldest", "drop_newest")


class _Base:
    def __init__(self, max_messages: int, max_bytes: int, on_full: str) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError(f"spool: max_messages and max_bytes must be >= 1, got {max_messages}, {max_bytes}")
        if on_full not in ON_FULL:
            raise ValueError(f"spool on_full: expected one of {list(ON_FULL)}, got {on_full!r}")
        self.max_messages, self.max_bytes, self.on_full = int(max_messages), int(max_bytes), on_full
        self.dropped = 0
        self._lock = threading.Lock()

    def _count_drop(self, n: int) -> None:
        if n <= 0:
            return
        before = self.dropped
        self.dropped += n
        if before // 1000 != self.dropped // 1000 or before == 0:
            log.warning("spool full (%d messages / %d bytes max): %s, %d dropped so far", self.max_messages,
                        self.max_bytes, "dropping the oldest" if self.on_full == "drop_oldest" else
                        "dropping new messages", self.dropped)


class MemorySpool(_Base):
    """In-memory spool (lost on restart)."""

    def __init__(self, *, max_messages: int = 100_000, max_bytes: int = 256 << 20,
                 on_full: Literal["drop_oldest", "drop_newest"] = "drop_oldest") -> None:
        super().__init__(max_messages, max_bytes, on_full)
        self._q: collections.deque[Row] = collections.deque()
        self._bytes = 0
        self._next = 1
        self._seqs: dict[Any, int] = {}

    def append(self, rows: list[tuple[str, str, bytes]], seqs: dict[Any, int]) -> None:
        with self._lock:
            self._seqs.update(seqs)
            for topic, key, payload in rows:
                if len(self._q) >= self.max_messages or self._bytes + len(payload) > self.max_bytes:
                    if self.on_full == "drop_newest" or not self._q:
                        self._count_drop(1)
                        continue
                    while self._q and (len(self._q) >= self.max_messages or
                                       self._bytes + len(payload) > self.max_bytes):
                        self._bytes -= len(self._q.popleft()[3])
                        self._count_drop(1)
                self._q.append((self._next, topic, key, payload))
                self._next += 1
                self._bytes += len(payload)

    def peek(self, n: int) -> list[Row]:
        with self._lock:
            return [self._q[i] for i in range(min(n, len(self._q)))]

    def ack(self, last_id: int) -> None:
        with self._lock:
            while self._q and self._q[0][0] <= last_id:
                self._bytes -= len(self._q.popleft()[3])

    def size(self) -> tuple[int, int]:
        with self._lock:
            return len(self._q), self._bytes

    def seqs(self) -> dict[Any, int]:
        with self._lock:
            return dict(self._seqs)

    def close(self) -> None:
        return None


class DiskSpool(_Base):
    """SQLite WAL spool at ``path`` (created; reopened with its messages after a restart)."""

    def __init__(self, path: str | os.PathLike, *, max_messages: int = 1_000_000, max_bytes: int = 1 << 30,
                 on_full: Literal["drop_oldest", "drop_newest"] = "drop_oldest") -> None:
        super().__init__(max_messages, max_bytes, on_full)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS msgs (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
                         " key TEXT NOT NULL, payload BLOB NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        n, b = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM msgs").fetchone()
        self._n, self._bytes = int(n), int(b)
        row = self._db.execute("SELECT v FROM meta WHERE k = 'seqs'").fetchone()
        self._seqs: dict[Any, int] = {k: int(v) for k, v in json.loads(row[0])} if row else {}
        if self._n:
            log.info("spool %s: %d messages (%d bytes) from an earlier run will be sent first", self.path, self._n,
                     self._bytes)

    def _make_room(self, need_bytes: int) -> None:
        """Delete the oldest rows until one more message of ``need_bytes`` fits."""
        while self._n and (self._n >= self.max_messages or self._bytes + need_bytes > self.max_bytes):
            k = max(1, min(self._n, self._n - self.max_messages + 1, 256))
            rows = self._db.execute("SELECT id, LENGTH(payload) FROM msgs ORDER BY id LIMIT ?", (k,)).fetchall()
            self._db.execute("DELETE FROM msgs WHERE id <= ?", (rows[-1][0],))
            self._n -= len(rows)
            self._bytes -= sum(r[1] for r in rows)
            self._count_drop(len(rows))

    def append(self, rows: list[tuple[str, str, bytes]], seqs: dict[Any, int]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                keep: list[tuple[str, str, bytes]] = []
                for topic, key, payload in rows:
                    full = self._n + len(keep) >= self.max_messages or \
                        self._bytes + sum(len(p) for _, _, p in keep) + len(payload) > self.max_bytes
                    if full and self.on_full == "drop_newest":
                        self._count_drop(1)
                        continue
                    if full:
                        self._flush(keep)
                        keep = []
                        self._make_room(len(payload))
                    keep.append((topic, key, payload))
                self._flush(keep)
                self._seqs.update(seqs)
                self._db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('seqs', ?)",
                                 (json.dumps(list(self._seqs.items())),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _flush(self, keep: list[tuple[str, str, bytes]]) -> None:
        if keep:
            self._db.executemany("INSERT INTO msgs (topic, key, payload) VALUES (?, ?, ?)", keep)
            self._n += len(keep)
            self._bytes += sum(len(p) for _, _, p in keep)

    def peek(self, n: int) -> list[Row]:
        with self._lock:
            return [(int(i), t, k, bytes(p)) for i, t, k, p in
                    self._db.execute("SELECT id, topic, key, payload FROM msgs ORDER BY id LIMIT ?", (n,))]

    def ack(self, last_id: int) -> None:
        with self._lock:
            n, b = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM msgs WHERE id <= ?",
                                    (last_id,)).fetchone()
            self._db.execute("DELETE FROM msgs WHERE id <= ?", (last_id,))
            self._n -= int(n)
            self._bytes -= int(b)

    def size(self) -> tuple[int, int]:
        with self._lock:
            return self._n, self._bytes

    def seqs(self) -> dict[Any, int]:
        with self._lock:
            return dict(self._seqs)

    def close(self) -> None:
        with self._lock:
            self._db.close()
