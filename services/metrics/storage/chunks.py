"""Chunks: runs of one series' samples stored as one row, with pre-computed summaries.

A chunk keeps its timestamps as an interval when they are evenly spaced (the
usual case for a scraper) and as offsets from start_ms otherwise. Ingest writes
the plain form (8 bytes per value); compaction rewrites closed windows in the
packed form (services.metrics.storage.codec, about 2 bytes per sample). The summaries
(count, sum, min, max, last) let aggregations skip decoding a chunk that lies
entirely inside one query bucket.

NaN ordering follows PostgreSQL, where the database computes the same
summaries: NaN sorts above every number, so `max` is NaN when any value is
NaN, and `min` ignores NaN unless every value is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from services.metrics.storage import codec

MAX_CHUNK_SPAN_MS = 2 * 3600 * 1000
"""A chunk ingest writes, or compaction's first tier, never spans more than this."""

PACKED_BLOCK_MS = 6 * 3600 * 1000
"""Compaction's second tier: once an aligned block of this length has closed, each series' chunks
starting in it become one packed chunk (1,440 samples at a 15 s interval). A chunk row and its zstd
frame cost ~250 bytes whatever they hold, ~1 byte a sample for an hour's 240 samples, 0.2 for six
hours'; a query reading a short range of old data decodes up to six hours per series instead."""

MAX_STORED_SPAN_MS = PACKED_BLOCK_MS
"""No stored chunk spans more than this; queries rely on it to bound their look-behind."""


def compaction_due(start_ms: int, end_ms: int, until_ms: int, block: bool) -> bool:
    """Whether compaction rewrites the window (or, `block`, the 6-hour block) [start_ms, end_ms)
    in a pass reaching `until_ms`: once it has closed, and a window only while its block is still
    open — a closed block's windows are folded with the block, never packed on their own first."""
    return end_ms <= until_ms and (block or until_ms < (start_ms // PACKED_BLOCK_MS + 1) * PACKED_BLOCK_MS)


@dataclass(slots=True)
class Chunk:
    series_id: int
    start_ms: int
    end_ms: int
    interval_ms: int
    offsets: list[int] | None
    values: list[float]
    sum: float
    min: float
    max: float

    @property
    def count(self) -> int:
        return len(self.values)

    @property
    def last(self) -> float:
        return self.values[-1]

    def timestamps(self) -> list[int]:
        return chunk_timestamps(self.start_ms, self.end_ms, self.interval_ms, self.offsets)


def chunk_timestamps(start_ms: int, end_ms: int, interval_ms: int, offsets: list[int] | None) -> list[int]:
    """A chunk's sample times from its stored form: an interval, or offsets from start_ms."""
    if offsets is None:
        return list(range(start_ms, end_ms + 1, interval_ms)) if interval_ms else [start_ms]
    return [start_ms + offset for offset in offsets]


def nan_aware_min_max(values: list[float]) -> tuple[float, float]:
    numbers = [v for v in values if v == v]
    if len(numbers) == len(values):
        return min(values), max(values)
    return (min(numbers) if numbers else math.nan), math.nan


def summarise(values: list[float]) -> tuple[float, float, float]:
    """(sum, min, max) of a non-empty list, NaN ordered as PostgreSQL orders it."""
    total = sum(values)
    if total == total:
        return total, min(values), max(values)
    low, high = nan_aware_min_max(values)
    return total, low, high


def spacing(timestamps: list[int]) -> int | None:
    """The constant interval of strictly ascending timestamps; 0 when ascending but uneven (or a
    single sample); None when not strictly ascending."""
    count = len(timestamps)
    if count < 2:
        return 0
    first, last = timestamps[0], timestamps[-1]
    step = (last - first) // (count - 1)
    if step > 0 and last - first == step * (count - 1) and timestamps == list(range(first, last + 1, step)):
        return step
    return 0 if all(a < b for a, b in pairwise(timestamps)) else None


def make_chunk(series_id: int, timestamps: list[int], values: list[float], interval: int) -> Chunk:
    """One chunk of strictly ascending timestamps with the given spacing (see `spacing`)."""
    start = timestamps[0]
    total, low, high = summarise(values)
    regular = interval > 0 or len(timestamps) == 1
    return Chunk(
        series_id=series_id,
        start_ms=start,
        end_ms=timestamps[-1],
        interval_ms=interval,
        offsets=None if regular else [t - start for t in timestamps],
        values=values,
        sum=total,
        min=low,
        max=high,
    )


def make_chunks(
    series_id: int,
    timestamps: list[int],
    values: list[float],
    interval: int | None = None,
    max_span_ms: int = MAX_CHUNK_SPAN_MS,
) -> list[Chunk]:
    """Chunks for strictly ascending samples, split wherever one would span more than `max_span_ms`."""
    if timestamps[-1] - timestamps[0] <= max_span_ms:
        return [make_chunk(series_id, timestamps, values, (spacing(timestamps) or 0) if interval is None else interval)]
    chunks, begin = [], 0
    for index in range(1, len(timestamps) + 1):
        if index == len(timestamps) or timestamps[index] - timestamps[begin] > max_span_ms:
            part = timestamps[begin:index]
            chunks.append(make_chunk(series_id, part, values[begin:index], spacing(part) or 0))
            begin = index
    return chunks


CHUNK_COLUMNS = ("start_ms", "end_ms", "sum", "min", "max", "last", "series_id", "n", "interval_ms", "offsets", "vals")
"""The `chunks` table's columns, named once: every statement and COPY lists them in this order,
so nothing depends on the order the migration happened to create them in. These are the plain
form's columns, which ingest writes; the packed form adds `PACKED_COLUMNS`."""

PACKED_COLUMNS = {"postgresql": ("codec", "packed"), "sqlite": ("codec",)}
"""The columns schema 0002 added per backend: the form (codec) and, on PostgreSQL, the packed blob
(SQLite keeps it in `vals`, a BLOB either way)."""


@dataclass(slots=True)
class ChunkColumns:
    """Many chunks as columns, the form ingest writes: one entry per chunk in the per-chunk arrays,
    and every chunk's samples concatenated in `timestamps`/`values` (chunk i owns
    `bounds[i]:bounds[i+1]`). `interval_ms` is 0 for a single sample or uneven spacing, in which
    case the store keeps offsets from `start_ms`."""

    series_id: np.ndarray  # int64
    interval_ms: np.ndarray  # int64
    counts: np.ndarray  # int64
    timestamps: np.ndarray  # int64, concatenated
    values: np.ndarray  # float64, concatenated
    sum: np.ndarray
    min: np.ndarray
    max: np.ndarray

    def __len__(self) -> int:
        return len(self.series_id)

    @property
    def bounds(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.counts)))

    @property
    def start_ms(self) -> np.ndarray:
        return self.timestamps[self.bounds[:-1]]

    @property
    def end_ms(self) -> np.ndarray:
        return self.timestamps[self.bounds[1:] - 1]

    @property
    def last(self) -> np.ndarray:
        return self.values[self.bounds[1:] - 1]

    @property
    def samples(self) -> int:
        return len(self.values)

    @classmethod
    def empty(cls) -> ChunkColumns:
        nothing = np.zeros(0, dtype=np.int64)
        floats = np.zeros(0, dtype=np.float64)
        return cls(nothing, nothing, nothing, nothing, floats, floats, floats, floats)

    @classmethod
    def from_chunks(cls, chunks: Sequence[Chunk]) -> ChunkColumns:
        if not chunks:
            return cls.empty()
        return cls(
            series_id=np.array([c.series_id for c in chunks], dtype=np.int64),
            interval_ms=np.array([c.interval_ms for c in chunks], dtype=np.int64),
            counts=np.array([c.count for c in chunks], dtype=np.int64),
            timestamps=np.array([t for c in chunks for t in c.timestamps()], dtype=np.int64),
            values=np.array([v for c in chunks for v in c.values], dtype=np.float64),
            sum=np.array([c.sum for c in chunks], dtype=np.float64),
            min=np.array([c.min for c in chunks], dtype=np.float64),
            max=np.array([c.max for c in chunks], dtype=np.float64),
        )

    @classmethod
    def concat(cls, parts: Sequence[ChunkColumns]) -> ChunkColumns:
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in cls.__slots__))

    def to_chunks(self) -> list[Chunk]:
        """Row form, for tests and the rare slow paths."""
        bounds = self.bounds.tolist()
        chunks = []
        for i, (series_id, interval) in enumerate(zip(self.series_id.tolist(), self.interval_ms.tolist(), strict=True)):
            times = self.timestamps[bounds[i] : bounds[i + 1]].tolist()
            chunks.append(
                Chunk(
                    series_id=series_id,
                    start_ms=times[0],
                    end_ms=times[-1],
                    interval_ms=interval,
                    offsets=None if interval or len(times) == 1 else [t - times[0] for t in times],
                    values=self.values[bounds[i] : bounds[i + 1]].tolist(),
                    sum=float(self.sum[i]),
                    min=float(self.min[i]),
                    max=float(self.max[i]),
                )
            )
        return chunks


def segment_summaries(values: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sum, min, max) of each non-empty segment of `values` beginning at `starts`, with NaN ordered
    as PostgreSQL orders it (the same rule as `summarise`): fmin skips NaN unless a segment is
    all NaN, maximum propagates it."""
    if not len(starts):
        empty = np.zeros(0, dtype=np.float64)
        return empty, empty, empty
    with np.errstate(invalid="ignore"):
        return (
            np.add.reduceat(values, starts),
            np.fmin.reduceat(values, starts),
            np.maximum.reduceat(values, starts),
        )


@dataclass(slots=True)
class PackedChunk:
    """A chunk in the packed form (see codec), ready to be written by either store."""

    series_id: int
    start_ms: int
    end_ms: int
    count: int
    interval_ms: int
    sum: float
    min: float
    max: float
    last: float
    blob: bytes


def packed_chunks(
    series_ids: np.ndarray,
    timestamps: np.ndarray,
    values: np.ndarray,
    max_span_ms: int = MAX_CHUNK_SPAN_MS,
    max_blob_bytes: int | None = None,
) -> list[PackedChunk]:
    """Compaction's output: the samples of each series (grouped by series, ascending in time) as
    packed chunks, split only where one would span more than `max_span_ms` or, given
    `max_blob_bytes`, where its blob would be longer (into even pieces)."""
    packed: list[PackedChunk] = []
    cuts = np.flatnonzero(series_ids[1:] != series_ids[:-1]) + 1
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(series_ids)], strict=True):
        if lo == hi:
            continue
        times, numbers = timestamps[lo:hi].tolist(), values[lo:hi].tolist()
        for chunk in make_chunks(int(series_ids[lo]), times, numbers, max_span_ms=max_span_ms):
            packed += _packed(chunk, max_blob_bytes)
    return packed


def _packed(chunk: Chunk, max_blob_bytes: int | None) -> list[PackedChunk]:
    offsets = None if chunk.offsets is None else np.array(chunk.offsets, dtype=np.int64)
    blob = codec.encode(np.array(chunk.values, dtype=np.float64), offsets)
    if max_blob_bytes is None or len(blob) <= max_blob_bytes or chunk.count < 2:
        return [
            PackedChunk(
                chunk.series_id,
                chunk.start_ms,
                chunk.end_ms,
                chunk.count,
                chunk.interval_ms,
                chunk.sum,
                chunk.min,
                chunk.max,
                chunk.last,
                blob,
            )
        ]
    pieces = min(chunk.count, -(-len(blob) // max_blob_bytes))
    times = chunk.timestamps()
    cuts = [chunk.count * i // pieces for i in range(pieces + 1)]
    return [
        piece
        for lo, hi in pairwise(cuts)
        for piece in _packed(
            make_chunk(chunk.series_id, times[lo:hi], chunk.values[lo:hi], spacing(times[lo:hi]) or 0), max_blob_bytes
        )
    ]


def rewrite_window(
    series_ids: np.ndarray,
    times: np.ndarray,
    values: np.ndarray,
    window_start_ms: int,
    window_end_ms: int,
    max_blob_bytes: int | None = None,
) -> tuple[list[PackedChunk], ChunkColumns]:
    """What compaction writes for the samples of the chunks that start in one window (grouped by
    series, ascending in time): the window's own samples as one packed chunk per series (in even
    pieces where the store limits a blob's length), and the samples of chunks that reach past its
    end (a batch straddling the boundary) as plain chunks again, to be packed with their own
    window's. So every sample of a closed window ends up packed, whatever the batches' boundaries."""
    span = window_end_ms - window_start_ms
    inside = times < window_end_ms
    if inside.all():
        return packed_chunks(series_ids, times, values, span, max_blob_bytes), ChunkColumns.empty()
    beyond = ~inside
    tail_series, tail_times, tail_values = series_ids[beyond], times[beyond], values[beyond]
    cuts = np.flatnonzero(tail_series[1:] != tail_series[:-1]) + 1
    tails = [
        chunk
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(tail_series)], strict=True)
        for chunk in make_chunks(int(tail_series[lo]), tail_times[lo:hi].tolist(), tail_values[lo:hi].tolist())
    ]
    packed = packed_chunks(series_ids[inside], times[inside], values[inside], span, max_blob_bytes)
    return packed, ChunkColumns.from_chunks(tails)


StoredRow = tuple[int, int, int, int, int, Any, Any]
"""A chunk as a store reads it for decoding: (series_id, start_ms, n, interval_ms, codec, offsets
payload or None, values payload), payloads in the store's own plain form or a packed blob."""


@dataclass(frozen=True)
class PlainForm:
    """How a store writes a plain chunk's payloads: a header to skip, then one fixed-size element
    per sample (a structured element names its number "v"). Payloads of many chunks are then read
    as one array, not one call per chunk: a fresh range holds thousands of small chunks."""

    header: int
    values: np.dtype
    offsets: np.dtype

    def read(self, payloads: list[Any], counts: np.ndarray, element: np.dtype, rows: list[int]) -> np.ndarray:
        """The numbers of `payloads` (chunk `rows[i]` holding `counts[i]`), concatenated; a payload
        of the wrong size raises PlainSizeMismatch naming its chunk."""
        sizes = np.fromiter((len(p) for p in payloads), dtype=np.int64, count=len(payloads))
        wrong = np.flatnonzero(sizes != self.header + counts * element.itemsize)
        if len(wrong):
            held = (int(sizes[wrong[0]]) - self.header) // element.itemsize
            raise PlainSizeMismatch(
                rows[int(wrong[0])], f"it holds {held} values where its row says {counts[wrong[0]]}"
            )
        header = self.header
        joined = b"".join([memoryview(p)[header:] for p in payloads]) if header else b"".join(payloads)
        numbers = np.frombuffer(joined, dtype=element)
        return numbers["v"] if element.names else numbers


class PlainSizeMismatch(ValueError):
    def __init__(self, row: int, message: str) -> None:
        super().__init__(message)
        self.row = row


def decode_rows(rows: Sequence[StoredRow], plain: PlainForm) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row index, series id, time, value) of every sample of `rows`, in row order. Both forms are
    read: plain payloads in the store's own `plain` form, packed blobs decoded together
    (codec.decode_many)."""
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, np.zeros(0, dtype=np.float64)
    header = np.array([row[:5] for row in rows], dtype=np.int64)
    series_ids, starts, counts, intervals, forms = header.T
    bounds = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=bounds[1:])
    index = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
    # Evenly spaced times (uneven chunks overwritten below): each row's start moved back by its
    # first sample's position, plus position x interval; repeats, no per-sample gathers.
    ramp = np.arange(int(bounds[-1]), dtype=np.int64)
    spacing = int(intervals[0]) if (intervals == intervals[0]).all() else np.repeat(intervals, counts)
    times = np.repeat(starts - bounds[:-1] * intervals, counts) + ramp * spacing
    values = np.empty(len(times), dtype=np.float64)
    unknown = np.flatnonzero((forms != codec.PACKED) & (forms != codec.PLAIN))
    if len(unknown):
        row = rows[int(unknown[0])]
        raise _unreadable(row, codec.CorruptChunk(f"form {row[4]} is not known to this version"))
    packed = np.flatnonzero(forms == codec.PACKED).tolist()
    if packed:
        try:
            decoded, offsets = codec.decode_many([rows[i][6] for i in packed], counts[packed].tolist())
        except codec.CorruptChunk as error:
            raise _unreadable(rows[packed[error.index]], error) from error
        if len(packed) == len(rows):
            values = decoded
        else:
            values[np.repeat(forms == codec.PACKED, counts)] = decoded  # rows ascend: samples line up in order
        for i, chunk_offsets in zip(packed, offsets, strict=True):
            if chunk_offsets is not None:
                times[bounds[i] : bounds[i + 1]] = starts[i] + chunk_offsets
    plain_rows = np.flatnonzero(forms == codec.PLAIN).tolist()
    if plain_rows:
        try:
            values[np.repeat(forms == codec.PLAIN, counts)] = plain.read(
                [rows[i][6] for i in plain_rows], counts[plain_rows], plain.values, plain_rows
            )
            uneven = [i for i in plain_rows if rows[i][5] is not None]
            if uneven:
                in_uneven = np.zeros(len(rows), dtype=bool)
                in_uneven[uneven] = True
                chosen = np.repeat(in_uneven, counts)
                times[chosen] = np.repeat(starts[uneven], counts[uneven]) + plain.read(
                    [rows[i][5] for i in uneven], counts[uneven], plain.offsets, uneven
                )
        except PlainSizeMismatch as error:
            raise _unreadable(rows[error.row], error) from error
        except ValueError as error:
            raise _unreadable(rows[plain_rows[0]], error) from error
    return index, series_ids[index], times, values


def _unreadable(row: StoredRow, error: Exception) -> codec.CorruptChunk:
    return codec.CorruptChunk(f"the chunk of series {row[0]} at {row[1]} ms cannot be read: {error}")
