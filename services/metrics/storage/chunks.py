"""Chunks: runs of one series' samples stored as one row, with pre-computed summaries.

A chunk keeps its timestamps as an interval when they are evenly spaced (the
usual case for a scraper) and as offsets from start_ms otherwise, so most
chunks store 8 bytes per sample plus a fixed per-row cost. The summaries
(count, sum, min, max, last) let aggregations skip decoding a chunk that lies
entirely inside one query bucket.

NaN ordering follows PostgreSQL, where the database computes the same
summaries: NaN sorts above every number, so `max` is NaN when any value is
NaN, and `min` ignores NaN unless every value is NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

MAX_CHUNK_SPAN_MS = 2 * 3600 * 1000
"""A chunk never spans more than this; queries rely on it to bound their look-behind."""


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


def make_chunks(series_id: int, timestamps: list[int], values: list[float], interval: int | None = None) -> list[Chunk]:
    """Chunks for strictly ascending samples, split wherever one would span more than MAX_CHUNK_SPAN_MS."""
    if timestamps[-1] - timestamps[0] <= MAX_CHUNK_SPAN_MS:
        return [make_chunk(series_id, timestamps, values, (spacing(timestamps) or 0) if interval is None else interval)]
    chunks, begin = [], 0
    for index in range(1, len(timestamps) + 1):
        if index == len(timestamps) or timestamps[index] - timestamps[begin] > MAX_CHUNK_SPAN_MS:
            part = timestamps[begin:index]
            chunks.append(make_chunk(series_id, part, values[begin:index], spacing(part) or 0))
            begin = index
    return chunks
