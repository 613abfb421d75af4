"""Query semantics over stored chunks, on numpy columns: stores read, this module computes.

A store hands over (`Querier.aggregation_input`) the chunks that lie wholly inside one bucket, as
their stored summaries (`Summaries`; PostgreSQL instead sums those in SQL into per-bucket
`Rollups`), and the decoded samples of every other chunk in the range (`Samples`). Everything
per sample is computed here, so the rules below are written once. The integration tests run every query against
both stores, fresh and compacted, and a property test holds them to a plain reference.

Buckets: bucket k covers [start + k*step, start + (k+1)*step) and is reported
at its start; samples must also lie within [start, end]. `rate` gives each
series' increase per second within a bucket, where a sample lower than the
one before it is a counter reset (the increase is the new value), using the
previous sample up to `rate_lookbehind_ms` before the bucket; groups sum the
rates of their series. A NaN sample is not a counter value: rate skips it (the step from the
value before it to the value after it is the increase). A series' increases in a bucket are
divided by the time the bucket covers: the whole step, or, for the last bucket when `end` cuts it
short, the longer of `end + 1 ms - bucket start` and the span of the samples the increases come
from (the earlier sample of its first increase to its newest sample), never more than the step.
So a bucket cut to 1 ms by an `end` that falls on its start does not divide a whole scrape
interval's increase by 1 ms (Prometheus' `rate` likewise never divides by less than the span its
samples cover).

LAST takes the newest sample; when several series' newest samples share a timestamp (one agent
round stamps all its series alike), the greatest value wins and NaN loses to any number, so the
answer does not depend on storage order, batching or compaction.

Series and groups without a point in the range are not returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from services.metrics.domain import Aggregation
from services.metrics.storage.chunks import Chunk
from services.metrics.storage.columns import AggregationInput, Points, Rollups, Samples, Summaries
from services.metrics.storage.ports import Querier

RATE_MIN_LOOKBEHIND_MS = 5 * 60 * 1000
_INT = np.int64
_FLOAT = np.float64


def rate_lookbehind_ms(step_ms: int) -> int:
    return max(step_ms, RATE_MIN_LOOKBEHIND_MS)


def newer_or_greater(t: int, v: float, than_t: int, than_v: float) -> bool:
    """The LAST rule for two samples: a newer sample wins; at equal timestamps the greater value,
    NaN losing. (`_last_of_each` applies the same rule to columns.)"""
    if t != than_t:
        return t > than_t
    if v != v:
        return False
    return than_v != than_v or v > than_v


def covered_ms(bucket: np.ndarray, start_ms: int, end_ms: int, step_ms: int) -> np.ndarray:
    """How long each bucket lies within [start, end]: the whole step, or less when `end` cuts it short."""
    return np.minimum(step_ms, end_ms + 1 - (start_ms + bucket * step_ms))


@dataclass(slots=True)
class Partials:
    """What each source contributes to a (group, bucket): p0/p1 are (count, sum) for AVG, (-, sum)
    for SUM, (count, -) for COUNT, (-, min)/(-, max) for MIN/MAX, (newest time, its value) for LAST
    and (-, increase per second) for RATE; p0 None means 1 for each entry (a single sample).
    Partials over disjoint sets of series or chunks merge into the same answer, which is how
    PostgreSQL's SQL summaries and query shards join in."""

    group: np.ndarray
    bucket: np.ndarray
    p0: np.ndarray | None
    p1: np.ndarray

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, int, float, float]]) -> Partials:
        table = np.array(list(rows), dtype=_FLOAT).reshape(-1, 4)
        return cls(table[:, 0].astype(_INT), table[:, 1].astype(_INT), table[:, 2], table[:, 3])

    @classmethod
    def from_rollups(cls, rollups: Rollups) -> Partials:
        return cls(rollups.group, rollups.bucket, rollups.p0, rollups.p1)

    def counts(self) -> np.ndarray:
        return np.ones(len(self.group), _FLOAT) if self.p0 is None else self.p0


def sample_partials(samples: Samples, start_ms: int, end_ms: int, step_ms: int, aggregation: Aggregation) -> Partials:
    """Each sample within [start, end] as its own partial (not for RATE)."""
    inside = samples.within(start_ms, end_ms)
    bucket = (inside.t - start_ms) // step_ms
    p0 = inside.t.astype(_FLOAT) if aggregation is Aggregation.LAST else None
    return Partials(inside.group, bucket, p0, inside.v)


def summary_partials(summaries: Summaries, start_ms: int, step_ms: int, aggregation: Aggregation) -> Partials:
    """Each whole-bucket chunk's stored summary as one partial (not for RATE)."""
    bucket = (summaries.start_ms - start_ms) // step_ms
    counts = summaries.count.astype(_FLOAT)
    p0, p1 = {
        Aggregation.AVG: (counts, summaries.sum),
        Aggregation.SUM: (counts, summaries.sum),
        Aggregation.COUNT: (counts, counts),
        Aggregation.MIN: (counts, summaries.min),
        Aggregation.MAX: (counts, summaries.max),
        Aggregation.LAST: (summaries.end_ms.astype(_FLOAT), summaries.last),
    }[aggregation]
    return Partials(summaries.group, bucket, p0, p1)


def rate_partials(samples: Samples, start_ms: int, end_ms: int, step_ms: int) -> Partials:
    """Per-second increases per (group, bucket) from samples reaching `rate_lookbehind_ms` before
    `start_ms`: NaN skipped, a decrease counted as a reset."""
    lookbehind = rate_lookbehind_ms(step_ms)
    kept = samples.within(start_ms - lookbehind, end_ms)
    numbers = ~np.isnan(kept.v)
    series, group, t, v = kept.series[numbers], kept.group[numbers], kept.t[numbers], kept.v[numbers]
    current, previous = v[1:], v[:-1]
    valid = (series[1:] == series[:-1]) & (t[1:] >= start_ms) & (t[1:] - t[:-1] <= lookbehind)
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, as in the reference
        increase = np.where(current >= previous, current - previous, current)[valid]
    bucket = (t[1:][valid] - start_ms) // step_ms
    series, group = series[1:][valid], group[1:][valid]
    if not len(series):
        return Partials(group, bucket, None, increase)
    began, newest = t[:-1][valid], t[1:][valid]
    # Per (series, bucket): a run of consecutive increases (series ascend, then time). The run's
    # span reaches from the earlier sample of its first increase to its newest sample.
    run = np.flatnonzero(np.r_[True, (series[1:] != series[:-1]) | (bucket[1:] != bucket[:-1])])
    last = np.r_[run[1:], len(series)] - 1
    span = newest[last] - began[run]
    divisor = np.minimum(step_ms, np.maximum(covered_ms(bucket[run], start_ms, end_ms, step_ms), span))
    per_second = increase / (np.repeat(divisor, np.diff(np.r_[run, len(series)])) / 1000)
    return Partials(group, bucket, None, per_second)


def _last_of_each(key: np.ndarray, time: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Index of the LAST winner per distinct `key`: newest time, then greatest value, NaN losing."""
    nan = np.isnan(value)
    order = np.lexsort((np.where(nan, -np.inf, value), ~nan, time, key))
    sorted_keys = key[order]
    ends = np.flatnonzero(np.append(sorted_keys[1:] != sorted_keys[:-1], True))
    return order[ends]


def combine(sources: Sequence[Partials], aggregation: Aggregation, start_ms: int, step_ms: int) -> dict[int, Points]:
    """Merge partials into one value per (group, bucket); groups with no partial are absent.

    Group numbers are small and dense (the query numbers its groups 0, 1, ...) and the buckets
    of a query are bounded, so every (group, bucket) gets a slot in flat arrays that numpy adds
    into directly (bincount), with no sorting."""
    sources = [p for p in sources if len(p.group)]
    if not sources:
        return {}
    buckets = max(int(p.bucket.max()) for p in sources) + 1
    size = (max(int(p.group.max()) for p in sources) + 1) * buckets
    slots = [p.group * buckets + p.bucket for p in sources]

    def total(weights: Callable[[Partials], np.ndarray | None]) -> np.ndarray:
        return sum((np.bincount(k, weights(p), size) for k, p in zip(slots, sources, strict=True)), np.zeros(size))

    tallies = [np.bincount(k, None, size) for k in slots]  # partials per slot, per source
    seen = sum(tallies, np.zeros(size))

    def counts() -> np.ndarray:
        """Samples per slot: a source without p0 holds single samples, so its tally is its count."""
        parts = (
            t if p.p0 is None else np.bincount(k, p.p0, size) for t, k, p in zip(tallies, slots, sources, strict=True)
        )
        return sum(parts, np.zeros(size))

    with np.errstate(invalid="ignore", divide="ignore"):  # NaN and ±Inf follow IEEE, as in SQL
        if aggregation is Aggregation.AVG:
            values = total(lambda p: p.p1) / counts()
        elif aggregation in (Aggregation.SUM, Aggregation.RATE):
            values = total(lambda p: p.p1)
        elif aggregation is Aggregation.COUNT:
            values = counts()
        elif aggregation in (Aggregation.MIN, Aggregation.MAX):
            # fmin: NaN only when every value is NaN; maximum: NaN wins, as PostgreSQL orders it
            values = np.full(size, np.nan if aggregation is Aggregation.MIN else -np.inf)
            pick = np.fmin if aggregation is Aggregation.MIN else np.maximum
            for k, p in zip(slots, sources, strict=True):
                pick.at(values, k, p.p1)
        else:
            key = np.concatenate(slots)
            times = np.concatenate([p.counts() for p in sources])
            latest = np.concatenate([p.p1 for p in sources])
            winners = _last_of_each(key, times, latest)
            values = np.full(size, np.nan)
            values[key[winners]] = latest[winners]
    present = np.flatnonzero(seen)
    return _emit(present // buckets, present % buckets, values[present], start_ms, step_ms)


def _emit(
    groups: np.ndarray, buckets: np.ndarray, values: np.ndarray, start_ms: int, step_ms: int
) -> dict[int, Points]:
    """Per group: bucket start times and values (keys arrive sorted by group, then bucket)."""
    result: dict[int, Points] = {}
    cuts = np.flatnonzero(groups[1:] != groups[:-1]) + 1
    times = (start_ms + buckets * step_ms).tolist()
    numbers = values.tolist()
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(groups)], strict=True):
        result[int(groups[lo])] = (times[lo:hi], numbers[lo:hi])
    return result


def query_aggregate(
    summaries: Summaries | None,
    samples: Samples,
    start_ms: int,
    end_ms: int,
    step_ms: int,
    aggregation: Aggregation,
    extra: Partials | None = None,
) -> dict[int, Points]:
    """The whole aggregation: stored summaries, decoded samples and any partials already merged
    elsewhere (PostgreSQL's), combined per group and bucket."""
    if aggregation is Aggregation.RATE:
        parts = [rate_partials(samples, start_ms, end_ms, step_ms)]
    else:
        parts = [sample_partials(samples, start_ms, end_ms, step_ms, aggregation)]
        if summaries is not None:
            parts.append(summary_partials(summaries, start_ms, step_ms, aggregation))
    if extra is not None:
        parts.append(extra)
    return combine(parts, aggregation, start_ms, step_ms)


def aggregate_stored(
    store: Querier, groups: dict[int, int], start_ms: int, end_ms: int, step_ms: int, aggregation: Aggregation
) -> dict[int, Points]:
    """An aggregation over stored series: the store reads (from far enough back for RATE's
    lookbehind), this module computes."""
    read_from = start_ms - (rate_lookbehind_ms(step_ms) if aggregation is Aggregation.RATE else 0)
    found = store.aggregation_input(groups, read_from, start_ms, end_ms, step_ms, aggregation)
    return computed(found, start_ms, end_ms, step_ms, aggregation)


def computed(
    found: AggregationInput, start_ms: int, end_ms: int, step_ms: int, aggregation: Aggregation
) -> dict[int, Points]:
    extra = Partials.from_rollups(found.rollups) if found.rollups is not None else None
    return query_aggregate(found.summaries, found.samples, start_ms, end_ms, step_ms, aggregation, extra=extra)


# Row-form entry points over `Chunk`s: the in-memory fake store and unit tests use these.


def whole_in_one_bucket(chunk_start: int, chunk_end: int, start_ms: int, end_ms: int, step_ms: int) -> bool:
    """Whether a chunk's stored summary answers its bucket (the stores' SQL says the same)."""
    return (
        chunk_start >= start_ms
        and chunk_end <= end_ms
        and (chunk_start - start_ms) // step_ms == (chunk_end - start_ms) // step_ms
    )


def samples_of(pairs: Iterable[tuple[int, Chunk]]) -> Samples:
    parts = [
        Samples(
            np.full(chunk.count, chunk.series_id, _INT),
            np.full(chunk.count, group, _INT),
            np.array(chunk.timestamps(), _INT),
            np.array(chunk.values, _FLOAT),
        )
        for group, chunk in pairs
    ]
    return Samples.concat(parts)


def points_in_range(chunks: Iterable[Chunk], start_ms: int, end_ms: int) -> Points:
    """The samples of one series' chunks (ascending) that lie within [start_ms, end_ms]."""
    found = samples_of((0, c) for c in chunks).within(start_ms, end_ms)
    return found.t.tolist(), found.v.tolist()


def aggregate(
    chunks: Iterable[tuple[int, Chunk]], start_ms: int, end_ms: int, step_ms: int, aggregation: Aggregation
) -> dict[int, Points]:
    """Aggregate (group, chunk) pairs into per-group bucket series; not for RATE."""
    whole, partly = [], []
    for group, chunk in chunks:
        if whole_in_one_bucket(chunk.start_ms, chunk.end_ms, start_ms, end_ms, step_ms):
            whole.append(
                (group, chunk.start_ms, chunk.end_ms, chunk.count, chunk.sum, chunk.min, chunk.max, chunk.last)
            )
        else:
            partly.append((group, chunk))
    return query_aggregate(Summaries.from_rows(whole), samples_of(partly), start_ms, end_ms, step_ms, aggregation)


def rate(series: Iterable[tuple[int, Sequence[Chunk]]], start_ms: int, end_ms: int, step_ms: int) -> dict[int, Points]:
    """Per-second counter increase per bucket, reset-aware, summed per group. Chunks ascending per series."""
    samples = samples_of((group, chunk) for group, chunks in series for chunk in chunks)
    return query_aggregate(None, samples, start_ms, end_ms, step_ms, Aggregation.RATE)


def combine_partials(
    rows: Iterable[tuple[int, int, float, float]], aggregation: Aggregation, start_ms: int, step_ms: int
) -> dict[int, Points]:
    """Merge per-bucket partial rows (group, bucket, p0, p1) computed over disjoint sets of series."""
    return combine([Partials.from_rows(rows)], aggregation, start_ms, step_ms)
