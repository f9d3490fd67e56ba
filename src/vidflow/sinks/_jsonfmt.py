"""JSON text of many records at once, column by column, byte-identical to ``orjson.dumps`` of the
same values (``tests/unit/test_jsonfmt.py`` holds it to that).

A :class:`Pieces` holds ``n`` rows as a sequence of items (constant separators, per-row tokens,
numbers, nested lists of numbers). :meth:`Pieces.join` lays them side by side in one ``uint8``
matrix, one row per record, every item in a fixed-width slot padded with NULs, then drops the
NULs with one ``bytes.translate`` (JSON text never holds a NUL: orjson escapes it). All numbers of
the batch are formatted by one vectorised pass, never a Python loop per value:

- floats rounded to ``d`` decimals (as ``np.round(x.astype(np.float64), d)`` then orjson): the
  scaled integer ``k = rint(x * 10**d)`` splits into a signed integer part and ``d`` fraction
  digits, each gathered from a table of ready text (8 bytes an entry, gathered as uint64). That
  is the text orjson writes (the shortest round trip of ``k / 10**d``) while ``|x| < 16384`` and
  ``d <= 4``; other values (NaN, inf, large) are written by orjson itself;
- integers: gathered from the same table below 16384 in magnitude, else orjson's text;
- names (labels): one ``orjson.dumps`` per distinct id; anything else one per row (``objects``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

__all__ = ["Pieces", "separators", "texts"]

_NP = orjson.OPT_SERIALIZE_NUMPY
_T = 1 << 14                     # integer parts below this come from a table
_MAX_D = 4                       # decimals served by the tables
_LITTLE = sys.byteorder == "little"


@functools.lru_cache(maxsize=1)
def _signed() -> np.ndarray:
    """``[2*_T]`` uint64, each the NUL-padded text of ``i`` (index ``2*i``) or ``-i`` (``2*i + 1``)."""
    return np.array([b"-%d" % i if neg else b"%d" % i for i in range(_T) for neg in (0, 1)], dtype="S8").view(np.uint64)


@functools.lru_cache(maxsize=1)
def _fractions() -> tuple[np.ndarray, np.ndarray]:
    """``(table, offsets)``: ``table[offsets[d] + f]`` is ``b".<f as d digits, trailing zeros
    cut>"`` (``b".0"`` for 0) as NUL-padded uint64, for ``d`` 0..4; the last entry is empty
    (after a value orjson wrote whole)."""
    parts, offsets, at = [], [], 0
    for d in range(_MAX_D + 1):
        offsets.append(at)
        parts += [("." + (str(f).rjust(d, "0").rstrip("0") or "0")).encode() for f in range(10 ** d)]
        at += 10 ** d
    return np.array([*parts, b""], dtype="S8").view(np.uint64), np.array(offsets, dtype=np.intp)


def _texts(values: list) -> np.ndarray:
    """orjson's text of each number / bool / None in ``values``, as an ``S`` array."""
    if not values:
        return np.array([], dtype="S1")
    return np.array(orjson.dumps(values)[1:-1].split(b","))


def texts(values: list) -> list[bytes]:
    """orjson's text of each number / bool / None in ``values`` (one ``orjson.dumps``)."""
    return orjson.dumps(values)[1:-1].split(b",") if values else []


@functools.lru_cache(maxsize=64)
def _name_texts(names: tuple[str, ...]) -> np.ndarray:
    return np.array([orjson.dumps(x) for x in names]) if names else np.zeros(0, "S1")


def _words(w: np.ndarray) -> np.ndarray:
    """uint64 ``[n, m]`` words of text as ``uint8 [n, m, 8]``."""
    return np.ascontiguousarray(w).view(np.uint8).reshape(*w.shape, 8)


def _u8(a: np.ndarray) -> np.ndarray:
    """An ``S<w>`` array as ``uint8 [..., w]`` (its NUL-padded bytes)."""
    return np.ascontiguousarray(a).view(np.uint8).reshape(*a.shape, a.dtype.itemsize)


def _floats(x: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """``x`` ``[m, n]`` (row ``j``: one column of numbers, rounded to ``dec[j]`` <= 4 decimals):
    ``(heads, fractions)`` as NUL-padded text, the integer parts and signs ``[m, n]`` (for
    widths), and whether every value took the table path: then the texts are uint64 ``[m, n]``
    words (8 bytes of text each), else ``uint8 [n, m, w]``."""
    f = (10.0 ** dec.astype(np.float64))[:, None]
    k = np.rint(x * f)                          # np.round(x, d) == k / 10**d, as NumPy computes it
    mag = np.abs(k)
    fast = mag < _T * f                         # False for NaN / inf too
    every = bool(fast.all())
    if not every:
        mag = np.where(fast, mag, 0.0)
    ip = np.floor(mag / f)                      # exact: mag is a whole number below 2**28
    table, offsets = _fractions()
    fp = (mag - ip * f).astype(np.intp) + offsets[dec][:, None]
    neg = np.signbit(k)
    head = _signed()[2 * ip.astype(np.intp) + neg]
    if every:
        return head, table[fp], ip, neg, True
    slow = ~fast
    texts = _texts((k / f)[slow].tolist())      # orjson's own text of the values off the tables
    head_s = head.view("S8") if texts.dtype.itemsize <= 8 else head.view("S8").astype(texts.dtype)
    head_s[slow] = texts
    fp[slow] = len(table) - 1                   # the empty entry
    return _u8(head_s.T), _u8(table[fp].view("S8").T), np.where(fast, ip, 0.0), neg, False


def _ints(v: np.ndarray) -> np.ndarray | None:
    """orjson's text of the integers ``v`` ``[n, m]`` as ``uint8 [n, m, 8]``, or None when some
    are outside the table."""
    if v.size and (int(v.min()) <= -_T or int(v.max()) >= _T):
        return None
    w = v.astype(np.intp)
    return _u8(_signed()[2 * np.abs(w) + (w < 0)].view("S8"))


def _digits(v: np.ndarray) -> int:
    return max((len(str(int(v.max()))), len(str(int(v.min()))))) if v.size else 1


class _Num:
    """``m`` numbers per row (a nested list when ``seps`` is given: the separators after each)."""

    __slots__ = ("v", "kind", "d", "seps", "head", "frac", "hw", "fw")

    def __init__(self, v: np.ndarray, kind: str, d: int, seps: list[bytes] | None) -> None:
        self.v, self.kind, self.d, self.seps = v, kind, d, seps
        self.head: np.ndarray | None = None
        self.frac: np.ndarray | None = None
        self.hw = self.fw = 0


class Pieces:
    """Byte pieces of ``n`` rows, added item by item (see the module docstring)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)
        self._items: list[Any] = []             # bytes | uint8 [n, w] | _Num
        self._patches: list[tuple[int, np.ndarray, int, bytes]] = []

    def const(self, b: bytes) -> None:
        """The same bytes in every row."""
        if self._items and isinstance(self._items[-1], bytes):
            self._items[-1] += b
        elif b:
            self._items.append(b)

    def slot(self, b: bytes) -> int:
        """Like :meth:`const`, but its bytes can be changed in some rows (:meth:`patch`)."""
        self._items.append(b)
        return len(self._items) - 1

    def patch(self, slot: int, rows: np.ndarray, at: int, data: bytes) -> None:
        """In ``rows``, the bytes of ``slot`` from ``at`` on become ``data`` (``b"\\0"`` drops one)."""
        self._patches.append((slot, rows, at, data))

    def tokens(self, toks: np.ndarray) -> None:
        """One ready piece per row (an ``S`` array of ``n``)."""
        self._items.append(_u8(toks))

    def objects(self, values: list) -> None:
        """Any JSON-able value per row (orjson, one call per row)."""
        dumps = orjson.dumps
        self.tokens(np.array([dumps(v, option=_NP) for v in values]) if values else np.zeros(0, "S1"))

    def names(self, ids: np.ndarray, name: Callable[[int], Any], known: tuple[str, ...] = ()) -> None:
        """``name(id)`` (a str or None) of each row's integer id: ``known[id]`` when every id
        indexes ``known`` (a cached table), else one orjson call per distinct id."""
        ids = np.asarray(ids).reshape(-1)
        if known and len(ids) and 0 <= int(ids.min()) and int(ids.max()) < len(known):
            self.tokens(_name_texts(known)[ids])
            return
        u, inv = np.unique(ids, return_inverse=True)
        self.tokens(np.array([orjson.dumps(name(int(x))) for x in u.tolist()])[inv.reshape(-1)])

    def ints(self, v: np.ndarray) -> None:
        """Integers or booleans, one per row."""
        self.array(np.asarray(v).reshape(self.n), "i")

    def floats(self, x: np.ndarray, d: int) -> None:
        """Numbers rounded to ``d`` decimals, one per row (``np.round`` then orjson)."""
        self.array(np.asarray(x).reshape(self.n), "f", d)

    def array(self, v: np.ndarray, kind: str, d: int = 0) -> None:
        """A number (``v`` ``[n]``) or a nested list (``v`` ``[n, *shape]``) per row; ``kind``
        ``"f"`` (floats, rounded to ``d`` decimals) or ``"i"`` (integers / booleans)."""
        shape = tuple(v.shape[1:])
        per = int(np.prod(shape)) if shape else 1
        if shape and per == 0:
            self.const(orjson.dumps(np.zeros(shape).tolist()))
            return
        seps = separators(shape) if shape else None
        if seps is not None:
            self.const(seps[0])
        self._items.append(_Num(v.reshape(self.n, per), kind, d, None if seps is None else seps[1:]))

    # ---- layout -----------------------------------------------------------------------------
    def _format(self) -> None:
        """Text of every number item: all floats of the batch in one pass, all integers in one."""
        nums = [it for it in self._items if isinstance(it, _Num)]
        fl = [x for x in nums if x.kind == "f" and 0 <= x.d <= _MAX_D]
        if fl:
            self._format_floats(fl)
        ints = [x for x in nums if x.kind == "i" and x.v.dtype.kind in "iu"]
        if ints:
            same = len({a.v.dtype for a in ints}) == 1
            words = _ints(np.concatenate([a.v for a in ints], axis=1)) if same and len(ints) > 1 else None
            at = 0
            for a in ints:                      # together when all fit the table, else one by one
                m = a.v.shape[1]
                w = words[:, at:at + m] if words is not None else _ints(a.v)
                if w is not None:
                    a.head, a.hw = w, _digits(a.v)
                at += m
        for a in nums:
            if a.head is None:                  # the rest: orjson's own text of each value
                vals = np.round(a.v.astype(np.float64), a.d) if a.kind == "f" else a.v
                a.head = _u8(_texts(vals.reshape(-1).tolist()).reshape(a.v.shape))
                a.hw = a.head.shape[2]

    @staticmethod
    def _format_floats(fl: list[_Num]) -> None:
        x = np.concatenate([a.v.T for a in fl], axis=0).astype(np.float64)       # one row per column
        dec = np.concatenate([np.full(a.v.shape[1], a.d, dtype=np.intp) for a in fl])
        head, frac, ip, neg, every = _floats(x, dec)
        if not every:
            at = 0
            for a in fl:
                m = a.v.shape[1]
                a.head, a.frac, a.hw, a.fw = head[:, at:at + m], frac[:, at:at + m], head.shape[2], 8
                at += m
            return
        digits = [len(str(int(v))) for v in ip.max(axis=1).tolist()]
        signs = np.any(neg, axis=1).tolist()
        hws, merge, shifts, at = [], [], [], 0
        for a in fl:                            # one width per item: its longest integer part
            m = a.v.shape[1]
            hw = max(digits[at:at + m]) + any(signs[at:at + m])
            one = _LITTLE and hw + a.d + 1 <= 8        # integer part and fraction fit one word
            hws.append(hw)
            merge.append(one)
            shifts += [8 * hw if one else 0] * m
            at += m
        mu = _words((head | (frac << np.array(shifts, dtype=np.uint64)[:, None])).T)
        hu, fu = (_words(head.T), _words(frac.T)) if not all(merge) else (mu, mu)
        at = 0
        for a, hw, one in zip(fl, hws, merge):
            m, fw = a.v.shape[1], a.d + 1
            if one:
                a.head, a.hw, a.fw = mu[:, at:at + m], hw + fw, 0
            else:
                a.head, a.frac, a.hw, a.fw = hu[:, at:at + m], fu[:, at:at + m], hw, fw
            at += m

    def join(self) -> bytes:
        """Every row's pieces, row after row, as one bytes object."""
        self._format()
        widths = []
        for it in self._items:
            if isinstance(it, bytes):
                widths.append(len(it))
            elif isinstance(it, np.ndarray):
                widths.append(it.shape[1])
            else:
                sw = max(map(len, it.seps)) if it.seps else 0
                widths.append(it.v.shape[1] * (it.hw + it.fw + sw))
        n = self.n
        starts = np.cumsum([0, *widths]).tolist()
        row = np.zeros(starts[-1], dtype=np.uint8)        # what every row shares: constants, separators
        for it, a, w in zip(self._items, starts, widths):
            if isinstance(it, bytes):
                row[a:a + w] = np.frombuffer(it, dtype=np.uint8)
            elif isinstance(it, _Num) and it.seps:
                m = it.v.shape[1]
                row[a:a + w].reshape(m, w // m)[:, it.hw + it.fw:] = _seps_u8(tuple(it.seps))
        grid = np.empty((n, starts[-1]), dtype=np.uint8)
        grid[:] = row
        for it, a, w in zip(self._items, starts, widths):
            if isinstance(it, np.ndarray):
                grid[:, a:a + w] = it
            elif isinstance(it, _Num):
                m = it.v.shape[1]
                g = grid[:, a:a + w]
                g.shape = (n, m, w // m)         # a view (raises rather than copy)
                assert it.head is not None
                g[:, :, :it.hw] = it.head[:, :, :it.hw]
                if it.fw and it.frac is not None:
                    g[:, :, it.hw:it.hw + it.fw] = it.frac[:, :, :it.fw]
        for slot, rows, at, data in self._patches:
            a = starts[slot] + at
            grid[rows, a:a + len(data)] = np.frombuffer(data, dtype=np.uint8)
        return grid.tobytes().translate(None, b"\0")


@functools.lru_cache(maxsize=64)
def _seps_u8(seps: tuple[bytes, ...]) -> np.ndarray:
    out = np.zeros((len(seps), max(len(x) for x in seps)), dtype=np.uint8)
    for j, x in enumerate(seps):
        out[j, :len(x)] = np.frombuffer(x, dtype=np.uint8)
    return out


@functools.lru_cache(maxsize=64)
def separators(shape: tuple[int, ...]) -> list[bytes]:
    """The ``prod(shape) + 1`` separators of a nested JSON list of ``shape`` (around and between
    its scalars), e.g. ``(2, 2)`` -> ``[b"[[", b",", b"],[", b",", b"]]"]``."""
    per = int(np.prod(shape))
    strides = [int(np.prod(shape[i + 1:])) for i in range(len(shape))]
    out = [b"[" * len(shape)]
    for j in range(1, per):
        closed = sum(1 for s in strides if j % s == 0)     # lists that end before element j
        out.append(b"]" * (closed - 1) + b"," + b"[" * (closed - 1))
    return [*out, b"]" * len(shape)]
