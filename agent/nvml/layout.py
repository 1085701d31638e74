"""Fast, checked access to arrays of NVML ctypes structs.

Reading a field of a pynvml struct goes through ``_PrintableStructure.__getattribute__``
(a Python-level override), about a microsecond per attribute. A field-value batch has
~30 entries of 5 attributes each, every second, on every GPU, so the backend (and the
fake, writing them) instead unpack the array's memory with one ``struct.Struct`` whose
format is *derived from the ctypes field offsets* of the actual class, and checked
against it: if a future pynvml changes a layout, ``struct_for`` returns ``None`` and the
callers fall back to attribute access.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Sequence
from typing import Any

_cache: dict[tuple[Any, tuple[tuple[str, str], ...]], struct.Struct | None] = {}


def struct_for(cls: Any, fields: Sequence[tuple[str, str]]) -> struct.Struct | None:
    """A ``struct.Struct`` over ``fields`` ((name, struct code), in offset order) of ctypes class ``cls``.

    Bytes between and after the named fields are padding (``x``), so the struct's size is
    ``sizeof(cls)`` and ``iter_unpack`` walks an array. ``None`` when a field is missing,
    out of order, overlapping, or its size differs from the code's.
    """
    key = (cls, tuple(fields))
    if key in _cache:
        return _cache[key]
    result: struct.Struct | None = None
    try:
        placed = [(getattr(cls, name).offset, getattr(cls, name).size, code) for name, code in fields]
        fmt, pos = "=", 0
        for offset, size, code in placed:
            if offset < pos or struct.calcsize("=" + code) != size:
                raise ValueError(code)
            fmt += (f"{offset - pos}x" if offset > pos else "") + code
            pos = offset + size
        total = ctypes.sizeof(cls)
        fmt += f"{total - pos}x" if total > pos else ""
        result = struct.Struct(fmt)
        if result.size != total:
            result = None
    except (AttributeError, ValueError, TypeError, struct.error):
        result = None
    _cache[key] = result
    return result


def raw_bytes(array: Any, count: int | None = None) -> memoryview | None:
    """The bytes of a ctypes array (its first ``count`` elements), or None for other objects."""
    try:
        view = memoryview(array).cast("B")
    except TypeError:
        return None
    if count is not None:
        view = view[: count * ctypes.sizeof(type(array)._type_)]
    return view


_ULONG = "Q" if ctypes.sizeof(ctypes.c_ulong) == 8 else "I"
# NVML value type -> how to read the 8-byte value union
VALUE_DECODERS: dict[int, struct.Struct] = {
    0: struct.Struct("=d"),
    1: struct.Struct("=I4x"),
    2: struct.Struct("=" + _ULONG + ("" if _ULONG == "Q" else "4x")),
    3: struct.Struct("=Q"),
    4: struct.Struct("=q"),
    5: struct.Struct("=i4x"),
    6: struct.Struct("=H6x"),
}


def decode_value(value_type: int, raw: bytes) -> float | int:
    return VALUE_DECODERS.get(value_type, VALUE_DECODERS[3]).unpack(raw)[0]  # type: ignore[no-any-return]
