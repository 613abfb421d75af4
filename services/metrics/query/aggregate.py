"""Query semantics over chunks, computed in Python.

The PostgreSQL store computes the same results in SQL (see store_postgres.py);
the SQLite store, which cannot unnest arrays, uses these functions. The
integration tests run every query against both and expect identical numbers.

Buckets: bucket k covers [start + k*step, start + (k+1)*step) and is reported
at its start; samples must also lie within [start, end]. `rate` gives each
series' increase per second within a bucket, where a sample lower than the
one before it is a counter reset (the increase is the new value), using the
previous sample up to `rate_lookbehind_ms` before the bucket; groups sum the
rates of their series. A NaN sample is not a counter value: rate skips it (the step from the
value before it to the value after it is the increase). A bucket that `end` cuts short is divided
by the time it really covers, `end + 1 ms - bucket start`, not by the full step.

LAST takes the newest sample; when several series' newest samples share a timestamp (one agent
round stamps all its series alike), the greatest value wins and NaN loses to any number, so the
answer does not depend on storage order, batching or compaction.

Series and groups without a point in the range are not returned.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

from services.metrics.domain import Aggregation
from services.metrics.storage.chunks import Chunk

Points = tuple[list[int], list[float]]
RATE_MIN_LOOKBEHIND_MS = 5 * 60 * 1000


def rate_lookbehind_ms(step_ms: int) -> int:
    return max(step_ms, RATE_MIN_LOOKBEHIND_MS)


def _nan_min(a: float, b: float) -> float:
    if a != a:
        return b
    if b != b:
        return a
    return a if a <= b else b


def newer_or_greater(t: int, v: float, than_t: int, than_v: float) -> bool:
    """The LAST rule: a newer sample wins; at equal timestamps the greater value, NaN losing."""
    if t != than_t:
        return t > than_t
    if v != v:
        return False
    return than_v != than_v or v > than_v


def covered_seconds(bucket: int, start_ms: int, end_ms: int, step_ms: int) -> float:
    """How long bucket `bucket` really covers: the whole step, or less when `end` cuts it short."""
    return min(step_ms, end_ms + 1 - (start_ms + bucket * step_ms)) / 1000


def _nan_max(a: float, b: float) -> float:
    if a != a or b != b:
        return math.nan
    return a if a >= b else b


def points_in_range(chunks: Iterable[Chunk], start_ms: int, end_ms: int) -> Points:
    """The samples of one series' chunks (ascending) that lie within [start_ms, end_ms]."""
    times: list[int] = []
    values: list[float] = []
    for chunk in chunks:
        if chunk.start_ms >= start_ms and chunk.end_ms <= end_ms:
            times.extend(chunk.timestamps())
            values.extend(chunk.values)
            continue
        for t, v in zip(chunk.timestamps(), chunk.values, strict=True):
            if start_ms <= t <= end_ms:
                times.append(t)
                values.append(v)
    return times, values


class _Bucket:
    __slots__ = ("count", "high", "last_t", "last_v", "low", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.low = math.nan
        self.high = -math.inf
        self.last_t = -1
        self.last_v = math.nan

    def add_summary(self, count: int, total: float, low: float, high: float, last_t: int, last_v: float) -> None:
        self.count += count
        self.total += total
        self.low = _nan_min(self.low, low)
        self.high = _nan_max(self.high, high)
        if newer_or_greater(last_t, last_v, self.last_t, self.last_v):
            self.last_t, self.last_v = last_t, last_v

    def value(self, aggregation: Aggregation) -> float:
        if aggregation is Aggregation.AVG:
            return self.total / self.count
        if aggregation is Aggregation.SUM:
            return self.total
        if aggregation is Aggregation.COUNT:
            return float(self.count)
        if aggregation is Aggregation.MIN:
            return self.low
        if aggregation is Aggregation.MAX:
            return self.high
        return self.last_v


def _emit(buckets: dict[int, dict[int, float]], start_ms: int, step_ms: int) -> dict[int, Points]:
    result: dict[int, Points] = {}
    for group, by_bucket in buckets.items():
        if not by_bucket:
            continue  # a group whose chunks overlap the range without a sample inside it
        order = sorted(by_bucket)
        result[group] = ([start_ms + b * step_ms for b in order], [by_bucket[b] for b in order])
    return result


def aggregate(
    chunks: Iterable[tuple[int, Chunk]],
    start_ms: int,
    end_ms: int,
    step_ms: int,
    aggregation: Aggregation,
) -> dict[int, Points]:
    """Aggregate (group, chunk) pairs into per-group bucket series; not for RATE."""
    buckets: dict[int, dict[int, _Bucket]] = defaultdict(dict)
    for group, chunk in chunks:
        by_bucket = buckets[group]
        first = (chunk.start_ms - start_ms) // step_ms
        if chunk.start_ms >= start_ms and chunk.end_ms <= end_ms and first == (chunk.end_ms - start_ms) // step_ms:
            bucket = by_bucket.get(first) or by_bucket.setdefault(first, _Bucket())
            bucket.add_summary(chunk.count, chunk.sum, chunk.min, chunk.max, chunk.end_ms, chunk.last)
            continue
        for t, v in zip(chunk.timestamps(), chunk.values, strict=True):
            if start_ms <= t <= end_ms:
                b = (t - start_ms) // step_ms
                bucket = by_bucket.get(b) or by_bucket.setdefault(b, _Bucket())
                bucket.add_summary(1, v, v, v, t, v)
    values = {g: {b: acc.value(aggregation) for b, acc in by.items()} for g, by in buckets.items()}
    return _emit(values, start_ms, step_ms)


def rate(
    series: Iterable[tuple[int, Sequence[Chunk]]],
    start_ms: int,
    end_ms: int,
    step_ms: int,
) -> dict[int, Points]:
    """Per-second counter increase per bucket, reset-aware, summed per group. Chunks ascending per series."""
    increases: dict[int, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    lookbehind = rate_lookbehind_ms(step_ms)
    for group, chunks in series:
        times, values = points_in_range(chunks, start_ms - lookbehind, end_ms)
        kept = [(t, v) for t, v in zip(times, values, strict=True) if v == v]  # NaN is no counter value
        times, values = [t for t, _ in kept], [v for _, v in kept]
        for i in range(1, len(times)):
            t = times[i]
            if t < start_ms or t - times[i - 1] > lookbehind:
                continue
            current, previous = values[i], values[i - 1]
            increases[group][(t - start_ms) // step_ms] += current - previous if current >= previous else current
    per_second = {
        g: {b: total / covered_seconds(b, start_ms, end_ms, step_ms) for b, total in by.items()}
        for g, by in increases.items()
    }
    return _emit(per_second, start_ms, step_ms)


def combine_partials(
    rows: Iterable[tuple[int, int, float, float]], aggregation: Aggregation, start_ms: int, step_ms: int
) -> dict[int, Points]:
    """Merge per-bucket partials (group, bucket, p0, p1) computed over disjoint sets of series.

    p0/p1 are (count, sum) for AVG, (-, sum) for SUM and RATE, (count, -) for COUNT, (-, min) and
    (-, max) for MIN and MAX, and (newest timestamp, its value) for LAST.
    """
    merged: dict[int, dict[int, list[float]]] = defaultdict(dict)
    for group, bucket, p0, p1 in rows:
        known = merged[group].get(bucket)
        if known is None:
            merged[group][bucket] = [p0, p1]
        elif aggregation is Aggregation.MIN:
            known[1] = _nan_min(known[1], p1)
        elif aggregation is Aggregation.MAX:
            known[1] = _nan_max(known[1], p1)
        elif aggregation is Aggregation.LAST:
            if newer_or_greater(int(p0), p1, int(known[0]), known[1]):
                known[0], known[1] = p0, p1
        else:
            known[0] += p0
            known[1] += p1
    values: dict[int, dict[int, float]] = {}
    for group, by_bucket in merged.items():
        if aggregation is Aggregation.AVG:
            values[group] = {b: total / count for b, (count, total) in by_bucket.items()}
        elif aggregation is Aggregation.COUNT:
            values[group] = {b: count for b, (count, _) in by_bucket.items()}
        else:
            values[group] = {b: value for b, (_, value) in by_bucket.items()}
    return _emit(values, start_ms, step_ms)
