"""A site's state in a compacted changelog: one base record and up to K delta records.

Rewriting a site's whole state on every step costs changelog bytes with everything its open
windows hold (a busy site's 15-minute buffer is ≈1,500 rows). Here a step writes, per site it
changed, either

- a **base** (key = the site id): the full state, with a generation number ``g``; or
- a **delta** (key = site id + ``\\x00`` + one byte ``seq``, 1 ≤ seq ≤ :data:`MAX_DELTAS`):
  ``g``, ``seq``, the scalars that changed (watermark, closed edges, spans, run_to, applied
  offsets, carry) and only the rows appended to the buffer since the previous record.

A delta is written only when the new buffer is, byte for byte, the old buffer followed by the
rows it holds (:func:`_appended` checks it); otherwise (rows trimmed, columns changed, a new
source partition, K deltas already, or more delta bytes than the base's) the state is
rebased: a base with ``g + 1``, then tombstones for the old generation's delta keys so that
compaction drops them. Delta keys are reused across generations (a bounded key space per
site); their value names its generation, so on recovery :func:`fold` keeps a delta only if
its ``g`` is the base's and its ``seq`` is the next one. A site id has no control characters
(CONTRACT.md §2), so ``\\x00`` never occurs in one: the site is the key up to it.

In memory a site is one entry, the tuple of raw records ``(base, delta1, ...)``; its
:class:`Chain` remembers what the next record is written against.

Encoding: little-endian ``struct`` fields and the arrays' raw bytes; the carry (a dict of
JSON values and arrays) in the :mod:`.codec` TSS1 format. No pickle: reading a record never
executes code, and array dtypes other than plain numbers are refused. A state stored by an
earlier release (one TSS1 record under the site key) still decodes, as a base of generation 0.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .codec import ALLOWED_DTYPES, decode_state, encode_state
from .processor import SiteState
from .windows import SiteWindows

__all__ = ["MAX_DELTAS", "SEP", "Chain", "Entry", "chain_of", "decode_entry", "fold",
           "site_of_key", "write"]

#: Separator between a site id and a delta's sequence number in a changelog key.
SEP = b"\x00"
#: At most this many deltas follow a base (K).
MAX_DELTAS = 64
#: A delta is written only while the deltas since the base stay under twice the base's
#: bytes plus this much: bounds what recovery folds and the table holds to ≈3x the state.
DELTA_SLACK = 2048

BASE_MAGIC = b"TSB2"
DELTA_MAGIC = b"TSD2"
TSS1_MAGIC = b"TSS1"

Entry = tuple[bytes, ...]
"""A site's records in the table: its base, then its deltas in order."""

_GEN = struct.Struct("<4sI")
_DELTA_HEAD = struct.Struct("<4sIBB")
_F2 = struct.Struct("<dd")
_F = struct.Struct("<d")
_ITEM = struct.Struct("<id")
_Q = struct.Struct("<q")
_IQ = struct.Struct("<Hq")
_H = struct.Struct("<H")
_I = struct.Struct("<I")

# Delta field flags, in the order the fields follow the header.
_WATERMARK, _RUN_TO, _CLOSED, _NEXT, _SPAN, _APPLIED, _CARRY, _ROWS = (1 << i for i in range(8))


def site_of_key(key: bytes) -> bytes:
    """The site id part of a changelog key (the whole key for a base)."""
    i = key.find(SEP)
    return key if i < 0 else key[:i]


def delta_key(site: bytes, seq: int) -> bytes:
    """The key of a site's delta number ``seq`` (1..:data:`MAX_DELTAS`)."""
    return site + SEP + bytes((seq,))


def generation(base: bytes) -> int:
    """The generation of a base record (0 for a TSS1 record of an earlier release)."""
    if base[:4] == BASE_MAGIC:
        return int(_GEN.unpack_from(base)[1])
    return 0


# -- encoding --------------------------------------------------------------------------------

def _dict(d: dict[int, float]) -> bytes:
    if len(d) > 255:
        raise ValueError("more than 255 window lengths")
    return bytes((len(d),)) + b"".join([_ITEM.pack(k, v) for k, v in d.items()])


def _dtype_name(dt: np.dtype[Any]) -> bytes:
    if dt.char not in ALLOWED_DTYPES:
        raise TypeError(f"cannot encode arrays of dtype {dt}")
    return dt.str.encode()


def _carry_bytes(carry: dict[str, Any]) -> bytes:
    return encode_state(carry) if carry else b""


def _name(s: str) -> bytes:
    b = s.encode()
    return _H.pack(len(b)) + b


_F64 = np.dtype(np.float64)


def _check_rows(w: SiteWindows) -> int:
    ts = w.buf_ts
    n = int(ts.size)
    if (ts.dtype is not _F64 and ts.dtype != _F64) or ts.ndim != 1:
        raise TypeError("a site's buffered timestamps must be a 1-D float64 array")
    shape = (n,)
    for k, v in w.buf_cols.items():
        if v.shape != shape:
            raise TypeError(f"buffered column {k!r} is not one value per buffered reading")
    return n


_HEADS: dict[tuple[int, int, int], struct.Struct] = {}  # per (len) of the three dicts
_LAYOUTS: dict[tuple[tuple[str, np.dtype[Any]], ...], bytes] = {}  # per buffered columns
_NAMES: dict[str, bytes] = {}  # per applied source
_CACHE_MAX = 1024  # entries each of those keeps at most (a few are ever met)


def _head(a: int, b: int, c: int) -> struct.Struct:
    """The fixed part of a base for dicts of ``a``, ``b``, ``c`` entries: magic, generation,
    watermark, run_to, the three dicts (count, then (length, value) pairs), the count of
    applied sources."""
    got = _HEADS.get((a, b, c))
    if got is None:
        if max(a, b, c) > 255:
            raise ValueError("more than 255 window lengths")
        if len(_HEADS) >= _CACHE_MAX:
            _HEADS.clear()
        got = _HEADS[(a, b, c)] = struct.Struct(
            "<4sIdd" + "".join(f"B{'id' * k}" for k in (a, b, c)) + "H")
    return got


def _layout(cols: dict[str, np.ndarray[Any, Any]]) -> bytes:
    """The column count, then each buffered column's name and dtype."""
    key = tuple([(k, v.dtype) for k, v in cols.items()])
    got = _LAYOUTS.get(key)
    if got is None:
        if len(cols) > 255:
            raise ValueError("more than 255 buffered columns")
        parts = [bytes((len(cols),))]
        for k, dt in key:
            dn = _dtype_name(dt)
            parts += [_name(k), bytes((len(dn),)), dn]
        if len(_LAYOUTS) >= _CACHE_MAX:
            _LAYOUTS.clear()
        got = _LAYOUTS[key] = b"".join(parts)
    return got


def _source_name(src: str) -> bytes:
    got = _NAMES.get(src)
    if got is None:
        if len(_NAMES) >= _CACHE_MAX:
            _NAMES.clear()
        got = _NAMES[src] = _name(src)
    return got


def encode_base(state: SiteState, gen: int, carry: bytes | None = None) -> bytes:
    """A base record of generation ``gen`` holding the whole ``state``.

    Layout (little-endian): ``TSB2``, ``gen`` (u32), watermark and run_to (f64), the
    closed_until, next_emit and span_end dicts (each a u8 count of (i32 length, f64)
    pairs), the applied sources (u16 count, each a u16-length name and an i64 offset),
    the buffered columns (u8 count, each a u16-length name and a u8-length dtype string),
    the row count and the carry's length (u32 each), the carry (:mod:`.codec`), then the
    timestamps' and each column's raw bytes. The fixed parts are packed by one cached
    ``struct`` per shape (a site's record is written on every step that changes it).
    """
    w = state.windows
    n = _check_rows(w)
    ts, cols = w.buf_ts, w.buf_cols
    carry_b = _carry_bytes(state.carry) if carry is None else carry
    cu, ne, se = w.closed_until, w.next_emit, w.span_end
    applied = state.applied
    head = _head(len(cu), len(ne), len(se)).pack(
        BASE_MAGIC, gen, w.watermark, w.run_to,
        len(cu), *[x for kv in cu.items() for x in kv],
        len(ne), *[x for kv in ne.items() for x in kv],
        len(se), *[x for kv in se.items() for x in kv],
        len(applied))
    parts = [head]
    for src, off in applied.items():
        parts += [_source_name(src), _Q.pack(off)]
    parts += [_layout(cols), _I.pack(n), _I.pack(len(carry_b)), carry_b, ts.tobytes()]
    parts += [v.tobytes() for v in cols.values()]
    return b"".join(parts)


def _same_prefix(new: np.ndarray[Any, Any], old: np.ndarray[Any, Any]) -> bool:
    """True if ``new`` starts with exactly the bytes of ``old`` (same dtype)."""
    if new is old:
        return True
    if new.dtype != old.dtype or new.size < old.size:
        return False
    return old.size == 0 or new[:old.size].tobytes() == old.tobytes()


def _appended(old: SiteWindows, new: SiteWindows) -> int | None:
    """How many rows ``new``'s buffer appends to ``old``'s, or None if it is not ``old``'s
    buffer followed by rows (a trim, another order, other columns)."""
    if list(old.buf_cols) != list(new.buf_cols):
        return None
    if not _same_prefix(new.buf_ts, old.buf_ts):
        return None
    for k, v in new.buf_cols.items():
        if not _same_prefix(v, old.buf_cols[k]):
            return None
    return int(new.buf_ts.size - old.buf_ts.size)


def encode_delta(chain: Chain, new: SiteState, carry: bytes) -> bytes | None:
    """The delta taking ``chain``'s state to ``new``, or None if none can say it."""
    old = chain.state
    ow, nw = old.windows, new.windows
    if tuple(new.applied) != chain.names:
        return None
    n0 = int(ow.buf_ts.size)
    added = _appended(ow, nw)
    if added is None:
        return None
    _check_rows(nw)
    mask = 0
    parts: list[bytes] = []
    if not _same_float(nw.watermark, ow.watermark):
        mask |= _WATERMARK
        parts.append(_F.pack(nw.watermark))
    if not _same_float(nw.run_to, ow.run_to):
        mask |= _RUN_TO
        parts.append(_F.pack(nw.run_to))
    for flag, a, b in ((_CLOSED, nw.closed_until, ow.closed_until),
                       (_NEXT, nw.next_emit, ow.next_emit),
                       (_SPAN, nw.span_end, ow.span_end)):
        if not _same_dict(a, b):
            mask |= flag
            parts.append(_dict(a))
    changed = [(i, off) for i, (src, off) in enumerate(new.applied.items())
               if old.applied.get(src) != off]
    if changed:
        mask |= _APPLIED
        parts.append(_H.pack(len(changed)))
        parts += [_IQ.pack(i, off) for i, off in changed]
    if carry != chain.carry:
        mask |= _CARRY
        parts += [_I.pack(len(carry)), carry]
    if added:
        mask |= _ROWS
        parts += [_I.pack(added), nw.buf_ts[n0:].tobytes()]
        parts += [v[n0:].tobytes() for v in nw.buf_cols.values()]
    return _DELTA_HEAD.pack(DELTA_MAGIC, chain.gen, chain.seq + 1, mask) + b"".join(parts)


def _same_float(a: float, b: float) -> bool:
    """True only if bit for bit the same (0.0 is not -0.0). False for unequal NaNs: a
    field written when unchanged is harmless, one left out when changed is not."""
    return a == b and (a != 0.0 or _F.pack(a) == _F.pack(b))


def _same_dict(a: dict[int, float], b: dict[int, float]) -> bool:
    """:func:`_same_float` for every value (the order of keys does not matter)."""
    return a == b and (0.0 not in a.values()
                       or all(_F.pack(v) == _F.pack(b[k]) for k, v in a.items()))


# -- decoding --------------------------------------------------------------------------------

class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def take(self, s: struct.Struct) -> tuple[Any, ...]:
        v = s.unpack_from(self.data, self.pos)
        self.pos += s.size
        return v

    def byte(self) -> int:
        v = self.data[self.pos]
        self.pos += 1
        return v

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated state record")
        v = self.data[self.pos:self.pos + n]
        self.pos += n
        return v

    def name(self) -> str:
        (n,) = self.take(_H)
        return self.raw(n).decode()

    def dict(self) -> dict[int, float]:
        n = self.byte()
        out = {}
        for _ in range(n):
            k, v = self.take(_ITEM)
            out[k] = v
        return out

    def array(self, dtype: np.dtype[Any], n: int) -> np.ndarray[Any, Any]:
        return np.frombuffer(self.raw(n * dtype.itemsize), dtype=dtype).copy()


def _dtype(name: bytes) -> np.dtype[Any]:
    dt = np.dtype(name.decode("ascii"))
    if dt.char not in ALLOWED_DTYPES or dt.str.encode() != name:
        raise ValueError(f"refusing array dtype {name!r}")
    return dt


def _carry(data: bytes) -> dict[str, Any]:
    return decode_state(data) if data else {}


def decode_base(data: bytes) -> tuple[SiteState, int]:
    """A base record's state and generation (a TSS1 record: generation 0)."""
    if data[:4] == TSS1_MAGIC:
        return SiteState.decode(data), 0
    if data[:4] != BASE_MAGIC:
        raise ValueError("not a Thurrock Streams state record")
    r = _Reader(data, 0)
    _, gen = r.take(_GEN)
    watermark, run_to = r.take(_F2)
    closed, nxt, span = r.dict(), r.dict(), r.dict()
    (n_src,) = r.take(_H)
    applied = {}
    for _ in range(n_src):
        src = r.name()
        applied[src] = int(r.take(_Q)[0])
    cols = []
    for _ in range(r.byte()):
        name = r.name()
        cols.append((name, _dtype(r.raw(r.byte()))))
    (n,) = r.take(_I)
    (nc,) = r.take(_I)
    carry = _carry(r.raw(nc))
    ts = r.array(np.dtype(np.float64), n)
    buf = {name: r.array(dt, n) for name, dt in cols}
    if r.pos != len(data):
        raise ValueError("trailing bytes after a state record")
    w = SiteWindows(watermark, closed, nxt, ts, buf, span, run_to)
    return SiteState(w, applied, carry), gen


def _apply_delta(state: SiteState, names: list[str], data: bytes,
                 ts_parts: list[np.ndarray[Any, Any]],
                 col_parts: dict[str, list[np.ndarray[Any, Any]]]) -> None:
    r = _Reader(data, 0)
    magic, _, _, mask = r.take(_DELTA_HEAD)
    if magic != DELTA_MAGIC:
        raise ValueError("not a Thurrock Streams delta record")
    w = state.windows
    if mask & _WATERMARK:
        (w.watermark,) = r.take(_F)
    if mask & _RUN_TO:
        (w.run_to,) = r.take(_F)
    if mask & _CLOSED:
        w.closed_until = r.dict()
    if mask & _NEXT:
        w.next_emit = r.dict()
    if mask & _SPAN:
        w.span_end = r.dict()
    if mask & _APPLIED:
        (k,) = r.take(_H)
        for _ in range(k):
            i, off = r.take(_IQ)
            state.applied[names[i]] = int(off)
    if mask & _CARRY:
        (nc,) = r.take(_I)
        state.carry = _carry(r.raw(nc))
    if mask & _ROWS:
        (n,) = r.take(_I)
        ts_parts.append(r.array(np.dtype(np.float64), n))
        for name, parts in col_parts.items():
            parts.append(r.array(w.buf_cols[name].dtype, n))
    if r.pos != len(data):
        raise ValueError("trailing bytes after a delta record")


def decode_entry(entry: Entry | bytes) -> SiteState:
    """The state a site's records fold to (a lone TSS1 record: the state it holds)."""
    if isinstance(entry, bytes):
        return SiteState.decode(entry)
    state, _ = decode_base(entry[0])
    if len(entry) > 1:
        names = list(state.applied)
        w = state.windows
        ts_parts = [w.buf_ts]
        col_parts = {k: [v] for k, v in w.buf_cols.items()}
        for d in entry[1:]:
            _apply_delta(state, names, d, ts_parts, col_parts)
        if len(ts_parts) > 1:
            w.buf_ts = np.concatenate(ts_parts)
            w.buf_cols = {k: np.concatenate(p) for k, p in col_parts.items()}
    return state


# -- the table's side --------------------------------------------------------------------------

@dataclass(slots=True)
class Chain:
    """What a site's next record is written against: its entry and the state it folds to."""

    entry: Entry
    state: SiteState
    gen: int
    seq: int                       # deltas since the base
    names: tuple[str, ...]         # the base's applied sources, in its order
    carry: bytes                   # the carry as the last record left it
    base_len: int
    delta_len: int
    rebase: bool = False           # a delta cannot follow (an earlier release's record)


def chain_of(entry: Entry | bytes, state: SiteState) -> Chain:
    """The chain of a stored entry whose decoded state is ``state`` (after recovery)."""
    if isinstance(entry, bytes):
        entry = (entry,)
    base = entry[0]
    old = base[:4] != BASE_MAGIC
    return Chain(entry, state, generation(base), len(entry) - 1, tuple(state.applied),
                 _carry_bytes(state.carry), len(base), sum(len(d) for d in entry[1:]), old)


def write(site: bytes, new: SiteState,
          chain: Chain | None) -> tuple[list[tuple[bytes, bytes]], list[bytes], Chain]:
    """The records storing ``new`` after ``chain`` (None: the site has none yet).

    Returns (records to send, delta keys to tombstone once those are stored, the new chain).
    """
    carry = _carry_bytes(new.carry)
    if chain is not None and not chain.rebase and chain.seq < MAX_DELTAS:
        delta = encode_delta(chain, new, carry)
        if delta is not None and chain.delta_len + len(delta) <= 2 * chain.base_len + DELTA_SLACK:
            seq = chain.seq + 1
            entry = (*chain.entry, delta)
            return ([(delta_key(site, seq), delta)], [],
                    Chain(entry, new, chain.gen, seq, chain.names, carry, chain.base_len,
                          chain.delta_len + len(delta)))
    gen = 1 if chain is None else chain.gen + 1
    base = encode_base(new, gen, carry)
    tombs = [] if chain is None else [delta_key(site, i) for i in range(1, chain.seq + 1)]
    return ([(site, base)], tombs,
            Chain((base,), new, gen, 0, tuple(new.applied), carry, len(base), 0))


def fold(data: MutableMapping[bytes, Any], key: bytes, value: bytes | None) -> bytes | None:
    """Fold one changelog record into ``data`` (site id -> :data:`Entry`).

    A base replaces the site's entry; its tombstone deletes the site. A delta is appended
    only if its generation is the base's and its seq the next one; any other delta (an old
    generation's, a repeat) and any delta tombstone change nothing. Returns the site key.
    """
    i = key.find(SEP)
    if i < 0:
        if value is None:
            data.pop(key, None)
        else:
            data[key] = (value,)
        return key
    site = key[:i]
    if value is None or len(value) < _DELTA_HEAD.size:
        return site
    entry = data.get(site)
    if entry is None:
        return site
    magic, gen, seq, _ = _DELTA_HEAD.unpack_from(value)
    if magic == DELTA_MAGIC and gen == generation(entry[0]) and seq == len(entry) \
            and entry[0][:4] == BASE_MAGIC:
        data[site] = (*entry, value)
    return site


def fold_all(data: MutableMapping[bytes, Any], records: Iterable[tuple[bytes, bytes | None]]
             ) -> None:
    """:func:`fold` each record in offset order."""
    for k, v in records:
        fold(data, k, v)
