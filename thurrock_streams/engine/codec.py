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

__all__ = ["decode_state", "encode_state"]

_MAGIC = b"TSS1"
_ALLOWED = frozenset("?bBhHiIlLqQefdg")


def encode_state(state: dict[str, Any]) -> bytes:
    """Encode a dict of JSON values and numpy arrays.

    >>> decode_state(encode_state({"a": np.arange(3.0), "n": 1}))["a"].tolist()
    [0.0, 1.0, 2.0]
    """
    chunks: list[bytes] = []
    offset = 0

    def walk(v: Any) -> Any:
        nonlocal offset
        t = type(v)  # exact types first: a state is mostly dicts, floats and arrays
        if t is dict:
            return {str(k): walk(x) for k, x in v.items()}
        if t is float:
            return v if v - v == 0.0 else {"$f": repr(v)}  # v - v is NaN for NaN and inf
        if t is int or t is str or t is bool or v is None:
            return v
        if isinstance(v, np.ndarray):
            if v.dtype.char not in _ALLOWED:
                raise TypeError(f"cannot encode arrays of dtype {v.dtype}")
            data = np.ascontiguousarray(v).tobytes()
            ref = {"$a": [v.dtype.str, list(v.shape), offset]}
            chunks.append(data)
            offset += len(data)
            return ref
        if isinstance(v, dict):
            return {str(k): walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        if isinstance(v, float) and not np.isfinite(v):
            return {"$f": repr(v)}
        if isinstance(v, np.floating | np.integer | np.bool_):
            return walk(v.item())
        return v

    header = orjson.dumps(walk(state))
    return b"".join([_MAGIC, struct.pack(">I", len(header)), header, *chunks])


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
