"""How a compacted chunk's samples are stored: one compressed blob per chunk.

Ingest writes chunks in the plain form (`PLAIN`: values as float64, offsets as int32, no
compression), cheap to write and small in number of samples. Compaction rewrites a closed
window's chunks in the packed form (`PACKED`), which is what keeps the store at a couple of bytes
per sample:

- values that are all decimals with at most `MAX_DIGITS` fraction digits (exporters' rounded
  gauges, integer counters) are stored as the integers `round(v * 10**d)`: the first one in the
  header, then the differences, zigzag-encoded so small negative steps stay small;
- any other values (NaN, ±Inf, -0.0, full-precision floats) are stored as each value's bits XORed
  with the previous value's bits, which is zero in the high bytes when neighbours are close;
- evenly spaced timestamps cost nothing (the chunk row keeps start and interval); uneven ones are
  stored as the change from one spacing to the next, zigzag-encoded;
- integer steps that share a factor (byte counters moving in whole 512- or 4096-byte blocks)
  are divided by it;
- the integers are written at the narrowest width that holds them (1, 2, 4 or 8 bytes) and
  byte-shuffled (all first bytes, then all second bytes, ...), so zstd sees long runs of
  similar bytes, and the whole is one zstd frame.

Encoding checks the decoded values bit for bit and falls back to the XOR form otherwise, so what
is read back is always exactly what was written (NaN payloads and -0.0 included).
"""

from __future__ import annotations

import struct

import numpy as np
import zstandard

PLAIN = 0
"""values float64 (little-endian BLOB on SQLite, float8[] on PostgreSQL), offsets int32 or none."""
PACKED = 1
"""values and uneven offsets in one compressed blob (this module)."""

MAX_DIGITS = 6
ZSTD_LEVEL = 19
"""Compaction runs in the background over small frames, so the strongest level costs little."""

_XOR, _DECIMAL, _DECIMAL_RISING = 0, 1, 2
"""Value kinds; a rising series (a counter between resets) needs no zigzag, which would cost a bit."""
_HEADER = struct.Struct("<BBBBqq")
"""value kind, fraction digits, value width, offset width, first integer, common step factor"""
_compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
_decompressor = zstandard.ZstdDecompressor()


class CorruptChunk(ValueError):
    """A stored blob that this version cannot read."""


def _zigzag(signed: np.ndarray) -> np.ndarray:
    return ((signed << 1) ^ (signed >> 63)).view(np.uint64)


def _unzigzag(unsigned: np.ndarray) -> np.ndarray:
    return (unsigned >> np.uint64(1)).view(np.int64) ^ -(unsigned & np.uint64(1)).view(np.int64)


def _width(unsigned: np.ndarray) -> int:
    top = int(unsigned.max()) if len(unsigned) else 0
    return 1 if top < 1 << 8 else 2 if top < 1 << 16 else 4 if top < 1 << 32 else 8


def _shuffled(unsigned: np.ndarray, width: int) -> bytes:
    """The integers at `width` bytes each, byte planes one after another."""
    return unsigned.astype(f"<u{width}").view(np.uint8).reshape(-1, width).T.tobytes()


def _unshuffled(planes: memoryview, count: int, width: int) -> np.ndarray:
    if count == 0:
        return np.zeros(0, dtype=np.uint64)
    grid = np.frombuffer(planes, dtype=np.uint8, count=count * width).reshape(width, count)
    return np.ascontiguousarray(grid.T).view(f"<u{width}").ravel().astype(np.uint64)


def _as_decimals(values: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(digits, integers) such that integers / 10**digits gives `values` back bit for bit."""
    with np.errstate(invalid="ignore", over="ignore"):
        for digits in range(MAX_DIGITS + 1):
            scale = 10.0**digits
            scaled = np.rint(values * scale)
            if not np.all(np.abs(scaled) < 2.0**53):
                return None  # NaN, ±Inf or too large: more digits will not help
            integers = scaled.astype(np.int64)
            if np.array_equal((integers / scale).view(np.uint64), values.view(np.uint64)):
                return digits, integers
    return None


def encode(values: np.ndarray, offsets: np.ndarray | None) -> bytes:
    """The packed blob of one chunk: float64 `values` and, for uneven spacing, int64 `offsets`
    (each sample's time minus the first's, ascending, starting at 0)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    decimals = _as_decimals(values)
    if decimals is not None:
        digits, integers = decimals
        first = int(integers[0])
        steps = np.diff(integers)
        # Counters of bytes in pages or sectors move in multiples of 512 or 4096: store steps / factor.
        factor = int(np.gcd.reduce(steps)) if len(steps) else 0
        if factor > 1:
            steps //= factor
        rising = not len(steps) or int(steps.min()) >= 0
        kind = _DECIMAL_RISING if rising else _DECIMAL
        encoded = steps.view(np.uint64) if rising else _zigzag(steps)
    else:
        kind, digits, first, factor = _XOR, 0, 0, 0
        bits = values.view(np.uint64)
        encoded = bits ^ np.concatenate(([np.uint64(0)], bits[:-1]))
    value_width = _width(encoded)
    body = [_shuffled(encoded, value_width)]
    offset_width = 0
    if offsets is not None and len(offsets) > 1:
        spacing = np.diff(np.asarray(offsets, dtype=np.int64))
        changes = _zigzag(np.diff(spacing, prepend=0))
        offset_width = _width(changes)
        body.append(_shuffled(changes, offset_width))
    header = _HEADER.pack(kind, digits, value_width, offset_width, first, factor)
    return header + _compressor.compress(b"".join(body))


def decode(blob: bytes | memoryview, count: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(values, offsets or None) of a packed blob holding `count` samples."""
    try:
        kind, digits, value_width, offset_width, first, factor = _HEADER.unpack_from(blob)
        body = memoryview(_decompressor.decompress(memoryview(blob)[_HEADER.size :]))
    except (struct.error, zstandard.ZstdError) as error:
        raise CorruptChunk(f"unreadable chunk: {error}") from error
    stored = count if kind == _XOR else count - 1
    encoded = _unshuffled(body, stored, value_width)
    if kind in (_DECIMAL, _DECIMAL_RISING):
        integers = np.empty(count, dtype=np.int64)
        integers[0] = first
        steps = _unzigzag(encoded) if kind == _DECIMAL else encoded.view(np.int64)
        np.cumsum(steps * factor if factor > 1 else steps, out=integers[1:])
        integers[1:] += first
        values = integers / 10.0**digits
    elif kind == _XOR:
        values = np.bitwise_xor.accumulate(encoded).view(np.float64)
    else:
        raise CorruptChunk(f"unknown value kind {kind}")
    offsets = None
    if offset_width:
        changes = _unshuffled(body[stored * value_width :], count - 1, offset_width)
        offsets = np.zeros(count, dtype=np.int64)
        np.cumsum(np.cumsum(_unzigzag(changes)), out=offsets[1:])
    return values, offsets
