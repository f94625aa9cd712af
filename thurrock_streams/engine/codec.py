"""A compact, pickle-free binary encoding of state dicts that hold numpy arrays.

Layout: ``b"TSS1"``, a 4-byte big-endian header length, a JSON header (the dict with
every array replaced by ``{"$a": [dtype, shape, offset]}``), then the arrays' bytes.
Only plain JSON values and numeric arrays are accepted, so a changelog record can never
execute code when it is read back.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

__all__ = ["ALLOWED_DTYPES", "StateWriter", "decode_state", "encode_state"]

_MAGIC = b"TSS1"
ALLOWED_DTYPES = frozenset("?bBhHiIlLqQefdg")
"""The array dtypes a state record may hold (numpy type characters): plain numbers only."""
_ALLOWED = ALLOWED_DTYPES
_DTYPE_STR: dict[np.dtype[Any], str] = {}  # allowed dtypes met so far, and their names


def encode_state(state: dict[str, Any]) -> bytes:
    """Encode a dict of JSON values and numpy arrays.

    >>> decode_state(encode_state({"a": np.arange(3.0), "n": 1}))["a"].tolist()
    [0.0, 1.0, 2.0]
    """
    w = StateWriter()
    return w.finish(w.value(state))


class StateWriter:
    """Builds one record: the header's values, with arrays moved to the body in the order
    they are met (:func:`encode_state` walks a dict with :meth:`value`)."""

    __slots__ = ("chunks", "offset")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.offset = 0

    def array(self, v: np.ndarray[Any, Any]) -> dict[str, Any]:
        """The header's reference to array ``v``, whose bytes go to the body."""
        dt = v.dtype
        code = _DTYPE_STR.get(dt)
        if code is None:
            if dt.char not in _ALLOWED:
                raise TypeError(f"cannot encode arrays of dtype {dt}")
            code = _DTYPE_STR[dt] = dt.str
        data = v.tobytes()  # C order, as np.ascontiguousarray(v).tobytes()
        ref = {"$a": [code, list(v.shape), self.offset]}
        self.chunks.append(data)
        self.offset += len(data)
        return ref

    def value(self, v: Any) -> Any:
        """Any JSON value or array, walked."""
        t = type(v)  # exact types first: a state is mostly dicts, floats and arrays
        if t is dict:
            return {str(k): self.value(x) for k, x in v.items()}
        if t is float:
            return v if v - v == 0.0 else {"$f": repr(v)}
        if t is int or t is str or t is bool or v is None:
            return v
        if isinstance(v, np.ndarray):
            return self.array(v)
        if isinstance(v, dict):
            return {str(k): self.value(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [self.value(x) for x in v]
        if isinstance(v, float) and not np.isfinite(v):
            return {"$f": repr(v)}
        if isinstance(v, np.floating | np.integer | np.bool_):
            return self.value(v.item())
        return v

    def finish(self, header: Any) -> bytes:
        """The record: magic, header length, JSON header, the arrays' bytes."""
        data = orjson.dumps(header)
        return b"".join([_MAGIC, struct.pack(">I", len(data)), data, *self.chunks])


def decode_state(data: bytes) -> dict[str, Any]:
    """Decode bytes made by :func:`encode_state`."""
    if data[:4] != _MAGIC:
        raise ValueError("not a Thurrock Streams state record")
    (hlen,) = struct.unpack(">I", data[4:8])
    header = orjson.loads(data[8:8 + hlen])
    body = memoryview(data)[8 + hlen:]

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            if "$a" in v:
                dtype_str, shape, off = v["$a"]
                dtype = np.dtype(dtype_str)
                if dtype.char not in _ALLOWED:
                    raise ValueError(f"refusing array dtype {dtype_str}")
                count = int(np.prod(shape)) if shape else 1
                arr = np.frombuffer(body, dtype=dtype, count=count, offset=off)
                return arr.reshape(shape).copy()
            if "$f" in v:
                return float(v["$f"])
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    result = walk(header)
    if not isinstance(result, dict):
        raise ValueError("state record does not hold a dict")
    return result
