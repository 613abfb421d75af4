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
  similar bytes, and the whole is one zstd frame;
- or, where it comes out smaller (a scraper's jitter of a few milliseconds), uneven offsets go in a
  second frame of their own, moved to start at 0: zstd then codes them with their own statistics
  (~0.32 bytes a sample for 0-4 ms of jitter, against ~0.41 sharing the values' frame).

Encoding checks the decoded values bit for bit and falls back to the XOR form otherwise, so what
is read back is always exactly what was written (NaN payloads and -0.0 included).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence

import numpy as np
import zstandard

from services.common.errors import DataLoss

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
_HEADER_FIELDS = np.dtype(
    [("kind", "u1"), ("digits", "u1"), ("width", "u1"), ("owidth", "u1"), ("first", "<i8"), ("factor", "<i8")]
)
_local = threading.local()


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    """This thread's (de)compressor: zstandard's are not safe to share between threads (queries
    decode on several at once), and making one per call would cost more than the decoding."""
    pair = getattr(_local, "pair", None)
    if pair is None:
        pair = _local.pair = (zstandard.ZstdCompressor(level=ZSTD_LEVEL), zstandard.ZstdDecompressor())
    return pair


class CorruptChunk(DataLoss):
    """A stored chunk that this version cannot read: the query fails with DATA_LOSS, not INTERNAL.
    `index` is the blob's position in a `decode_many` call."""

    def __init__(self, message: str, index: int = 0) -> None:
        super().__init__(message)
        self.index = index


def _zigzag(signed: np.ndarray) -> np.ndarray:
    return ((signed << 1) ^ (signed >> 63)).view(np.uint64)


def _unzigzag(unsigned: np.ndarray) -> np.ndarray:
    bits = unsigned.view(np.int64)
    return ((bits >> 1) & np.int64(0x7FFF_FFFF_FFFF_FFFF)) ^ -(bits & 1)


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


_ON_GRID = 0x80
"""Set in the offset width byte: offsets stored as distances from an even grid (see below)."""
_OWN_FRAME = 0x40
"""Set in the offset width byte: offsets in a frame of their own, after `_OWN_FRAME_HEADER`."""
_OWN_FRAME_HEADER = struct.Struct("<iiI")
"""the first entry of the offset form (the last offset, on the grid), the least of the others
(subtracted from each), the length of the values' frame"""


def _grid_step(last: int, count: int) -> int:
    """The even spacing a chunk's samples are jittered around: its span over its gaps, rounded."""
    return (last + (count - 1) // 2) // (count - 1)


def _offset_changes(offsets: np.ndarray) -> tuple[np.ndarray, int]:
    """Uneven offsets (ascending, from 0) as small integers, in whichever of two forms is smaller:
    - changes of spacing (delta of delta), best when the spacing drifts;
    - distances from the even grid `i x step` (the first entry is the last offset, which fixes the
      step), best for a scraper's jitter of a few milliseconds around a fixed interval: each
      distance is one sample's own jitter, where a change of spacing combines three."""
    spacing = np.diff(offsets)
    changes = np.diff(spacing, prepend=0)
    count = len(offsets)
    if count > 2:
        last = int(offsets[-1])
        distances = offsets[1:-1] - _grid_step(last, count) * np.arange(1, count - 1, dtype=np.int64)
        if int(np.abs(distances).sum()) < int(np.abs(changes[1:]).sum()):
            return _zigzag(np.concatenate(([last], distances))), _ON_GRID
    return _zigzag(changes), 0


def _offsets_from(changes: np.ndarray, count: int, on_grid: bool) -> np.ndarray:
    offsets = np.zeros(count, dtype=np.int64)
    if on_grid:
        last = int(changes[0])
        offsets[1:-1] = _grid_step(last, count) * np.arange(1, count - 1, dtype=np.int64) + changes[1:]
        offsets[-1] = last
    else:
        np.cumsum(np.cumsum(changes), out=offsets[1:])
    return offsets


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
    planes = _shuffled(encoded, value_width)
    compress = _zstd()[0].compress
    if offsets is None or len(offsets) < 2:
        return _HEADER.pack(kind, digits, value_width, 0, first, factor) + compress(planes)
    changes, form = _offset_changes(np.asarray(offsets, dtype=np.int64))
    offset_width = _width(changes)
    shared = _HEADER.pack(kind, digits, value_width, offset_width | form, first, factor) + compress(
        planes + _shuffled(changes, offset_width)
    )
    # The same offsets in a frame of their own: the form's first entry in the header, the others
    # moved to start at 0 (jitter of 0-4 ms becomes 0-8 zigzagged, 0-4 moved), one byte each.
    signed = _unzigzag(changes)
    lead, rest = int(signed[0]), signed[1:]
    low = int(rest.min()) if len(rest) else 0
    if not (min(lead, low) >= -(1 << 31) and max(lead, low) < 1 << 31):
        return shared  # offsets of a chunk of more than 24 days: none is stored
    moved = (rest - low).view(np.uint64)
    own_width = _width(moved)
    values_frame = compress(planes)
    own = (
        _HEADER.pack(kind, digits, value_width, own_width | form | _OWN_FRAME, first, factor)
        + _OWN_FRAME_HEADER.pack(lead, low, len(values_frame))
        + values_frame
        + compress(_shuffled(moved, own_width))
    )
    return own if len(own) < len(shared) else shared


def decode(blob: bytes | memoryview, count: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(values, offsets or None) of a packed blob holding `count` samples."""
    values, offsets = decode_many([blob], [count])
    return values, offsets[0]


def decode_many(
    blobs: Sequence[bytes | memoryview], counts: Sequence[int]
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """The values of many packed blobs, concatenated in order, and each one's offsets (None when
    evenly spaced). Headers are read as one array and chunks of the same kind, width and length
    are decoded together as the rows of one 2-D array, so a query over hundreds of compacted
    chunks costs a few array operations, not a few per chunk. A blob that cannot be read raises
    CorruptChunk naming its position."""
    count = np.asarray(counts, dtype=np.int64)
    bounds = np.zeros(len(count) + 1, dtype=np.int64)
    np.cumsum(count, out=bounds[1:])
    values = np.empty(int(bounds[-1]), dtype=np.float64)
    offsets: list[np.ndarray | None] = [None] * len(blobs)
    if not len(blobs):
        return values, offsets
    for index, blob in enumerate(blobs):
        if len(blob) < _HEADER.size:
            raise CorruptChunk(f"{len(blob)} bytes are too short for a packed chunk", index)
    head = np.frombuffer(b"".join(bytes(blob[: _HEADER.size]) for blob in blobs), dtype=_HEADER_FIELDS)
    kind, digits, width, offset_form = (head[name].astype(np.int64) for name in ("kind", "digits", "width", "owidth"))
    offset_width = offset_form & ~(_ON_GRID | _OWN_FRAME)
    on_grid, own_frame = (offset_form & _ON_GRID) != 0, (offset_form & _OWN_FRAME) != 0
    decompress = _zstd()[1].decompress
    bodies: list[bytes] = []
    own_offsets: dict[int, tuple[int, int, bytes]] = {}
    for index, blob in enumerate(blobs):
        try:
            if own_frame[index]:
                lead, low, length = _OWN_FRAME_HEADER.unpack_from(blob, _HEADER.size)
                at = _HEADER.size + _OWN_FRAME_HEADER.size
                view = memoryview(blob)
                bodies.append(decompress(view[at : at + length], allow_extra_data=False))
                own_offsets[index] = (lead, low, decompress(view[at + length :], allow_extra_data=False))
            else:
                bodies.append(decompress(memoryview(blob)[_HEADER.size :], allow_extra_data=False))
        except (zstandard.ZstdError, struct.error) as error:
            raise CorruptChunk(str(error), index) from error
    stored = np.where(kind == _XOR, count, count - 1)
    known = (kind <= _DECIMAL_RISING) & ((width == 1) | (width == 2) | (width == 4) | (width == 8))
    sizes = np.array([len(body) for body in bodies], dtype=np.int64)
    shared_offsets = np.where(own_frame, 0, (count - 1) * offset_width)
    wrong = np.flatnonzero(~known | (sizes != stored * width + shared_offsets))
    if len(wrong):
        raise CorruptChunk(f"kind {kind[wrong[0]]}, width {width[wrong[0]]}, {sizes[wrong[0]]} bytes", int(wrong[0]))
    for index in np.flatnonzero(offset_width).tolist():
        n, owidth = int(count[index]), int(offset_width[index])
        if index in own_offsets:
            lead, low, body = own_offsets[index]
            if len(body) != (n - 2) * owidth:
                raise CorruptChunk(f"{len(body)} bytes of offsets for {n} samples", index)
            rest = _unshuffled(memoryview(body), n - 2, owidth).view(np.int64) + low
            signed = np.concatenate(([lead], rest))
        else:
            at = int(stored[index] * width[index])
            signed = _unzigzag(_unshuffled(memoryview(bodies[index])[at:], n - 1, owidth))
        offsets[index] = _offsets_from(signed, n, bool(on_grid[index]))
    # Chunks alike in kind, width and length decode together.
    shape_key = (kind * 16 + width) * (1 << 40) + count
    for key in np.unique(shape_key).tolist():
        members = np.flatnonzero(shape_key == key)
        first_member = int(members[0])
        rows, n = len(members), int(count[first_member])
        group_kind, group_width, group_stored = (
            int(kind[first_member]),
            int(width[first_member]),
            int(stored[first_member]),
        )
        planes = np.frombuffer(
            b"".join(bodies[i][: group_stored * group_width] for i in members.tolist()), dtype=np.uint8
        )
        grid = np.ascontiguousarray(planes.reshape(rows, group_width, group_stored).transpose(0, 2, 1))
        encoded = grid.view(f"<u{group_width}").reshape(rows, group_stored).astype(np.uint64)
        if group_kind == _XOR:
            decoded = np.bitwise_xor.accumulate(encoded, axis=1).view(np.float64)
        else:
            first = head["first"][members]
            steps = _unzigzag(encoded) if group_kind == _DECIMAL else encoded.view(np.int64)
            factor = np.maximum(head["factor"][members], 1)
            if (factor > 1).any():
                steps = steps * factor[:, None]
            integers = np.empty((rows, n), dtype=np.int64)
            integers[:, 0] = first
            np.cumsum(steps, axis=1, out=integers[:, 1:])
            integers[:, 1:] += first[:, None]
            decoded = integers / (10.0 ** digits[members].astype(np.float64))[:, None]
        if rows == len(blobs):
            values[:] = decoded.ravel()
        else:
            values[(bounds[members][:, None] + np.arange(n)).ravel()] = decoded.ravel()
    return values, offsets
