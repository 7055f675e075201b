"""Register values <-> engineering values, per a profile field's data type and byte/word order.

Pure functions, no I/O: the poller decodes with them and the simulator encodes with them, and
the fuzz test drives them with arbitrary register words.
"""

from __future__ import annotations

import math
import struct
from enum import Enum


class DataType(str, Enum):
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    FLOAT32 = "float32"

    @property
    def registers(self) -> int:
        return 1 if self in (DataType.UINT16, DataType.INT16) else 2


class Order(str, Enum):
    """Byte order inside a register, or word order across the two registers of a 32-bit value."""

    BIG = "big"
    LITTLE = "little"


_STRUCT = {
    DataType.UINT16: ">H",
    DataType.INT16: ">h",
    DataType.UINT32: ">I",
    DataType.INT32: ">i",
    DataType.FLOAT32: ">f",
}


def _swap16(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def _to_wire_words(words: list[int], byte_order: Order, word_order: Order) -> list[int]:
    """Canonical big-endian words (high word first) <-> words as the device lays them out.

    The transformation is its own inverse, so it serves both directions.
    """
    out = list(words)
    if word_order is Order.LITTLE:
        out.reverse()
    if byte_order is Order.LITTLE:
        out = [_swap16(w) for w in out]
    return out


def decode_raw(words: list[int] | tuple[int, ...], dtype: DataType, byte_order: Order = Order.BIG,
               word_order: Order = Order.BIG) -> float:
    """The raw number in `words` (exactly `dtype.registers` 16-bit words, as read off the wire)."""
    if len(words) != dtype.registers:
        raise ValueError(f"{dtype.value} needs {dtype.registers} register(s), got {len(words)}")
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise ValueError("register words must be 0..65535")
    canonical = _to_wire_words(list(words), byte_order, word_order)
    data = b"".join(w.to_bytes(2, "big") for w in canonical)
    return float(struct.unpack(_STRUCT[dtype], data)[0])


def encode_raw(raw: float, dtype: DataType, byte_order: Order = Order.BIG,
               word_order: Order = Order.BIG) -> list[int]:
    """Inverse of decode_raw; integer types are rounded and clamped to their range."""
    if dtype is DataType.FLOAT32:
        data = struct.pack(">f", raw)
    else:
        bits = 16 * dtype.registers
        signed = dtype in (DataType.INT16, DataType.INT32)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        value = 0 if math.isnan(raw) else min(max(round(raw), lo), hi)
        data = struct.pack(_STRUCT[dtype], value)
    canonical = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    return _to_wire_words(canonical, byte_order, word_order)
