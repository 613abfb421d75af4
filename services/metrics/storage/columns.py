"""What a sample store hands back, as numpy columns: decoded samples, the stored summaries of
chunks, and (where the database sums them itself) per-bucket rollups of those summaries. The
query layer (`query/aggregate.py`) computes answers from these; storage only reads.

`DerivedReads` gives every store the reads that follow from two port methods, written once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

Points = tuple[list[int], list[float]]
_INT = np.int64
_FLOAT = np.float64


@dataclass(slots=True)
class Samples:
    """Decoded samples, one entry each; per series ascending in time, series after series."""

    series: np.ndarray  # int64 series id
    group: np.ndarray  # int64 group number (the series id itself for raw reads)
    t: np.ndarray  # int64 ms
    v: np.ndarray  # float64

    @classmethod
    def empty(cls) -> Samples:
        return cls(np.zeros(0, _INT), np.zeros(0, _INT), np.zeros(0, _INT), np.zeros(0, _FLOAT))

    @classmethod
    def concat(cls, parts: Sequence[Samples]) -> Samples:
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("series", "group", "t", "v")))

    def within(self, start_ms: int, end_ms: int) -> Samples:
        keep = (self.t >= start_ms) & (self.t <= end_ms)
        if keep.all():
            return self
        return Samples(self.series[keep], self.group[keep], self.t[keep], self.v[keep])


@dataclass(slots=True)
class Summaries:
    """Chunks answered by their stored summaries: each lies wholly inside one bucket."""

    group: np.ndarray
    end_ms: np.ndarray  # the chunk's newest sample time, for LAST
    start_ms: np.ndarray
    count: np.ndarray
    sum: np.ndarray
    min: np.ndarray
    max: np.ndarray
    last: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[float]]) -> Summaries:
        """From rows of (group, start_ms, end_ms, count, sum, min, max, last)."""
        columns = list(np.array(rows, dtype=_FLOAT).reshape(-1, 8).T)
        group, start, end, count = (c.astype(_INT) for c in columns[:4])
        return cls(group, end, start, count, *columns[4:])


@dataclass(slots=True)
class Rollups:
    """Stored summaries the database already summed per (group, bucket): two numbers each, as the
    aggregation asks (see `query.aggregate.Partials`, which they become)."""

    group: np.ndarray
    bucket: np.ndarray
    p0: np.ndarray
    p1: np.ndarray

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, int, float, float]]) -> Rollups:
        table = np.array(list(rows), dtype=_FLOAT).reshape(-1, 4)
        return cls(table[:, 0].astype(_INT), table[:, 1].astype(_INT), table[:, 2], table[:, 3])


@dataclass(slots=True)
class AggregationInput:
    """Everything stored that one aggregation needs: samples of the chunks no summary answers,
    and either the summaries of those that one does or their rollups."""

    samples: Samples
    summaries: Summaries | None = None
    rollups: Rollups | None = None


def points_by_series(samples: Samples) -> dict[int, Points]:
    """Raw samples per series, in the order given (ascending per series)."""
    result: dict[int, Points] = {}
    if not len(samples.t):
        return result
    cuts = np.flatnonzero(samples.series[1:] != samples.series[:-1]) + 1
    times, values = samples.t.tolist(), samples.v.tolist()
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(times)], strict=True):
        result[int(samples.series[lo])] = (times[lo:hi], values[lo:hi])
    return result


class DerivedReads:
    """Reads that follow from `raw_samples` and `latest`, for every store (and the fake)."""

    def raw_samples(
        self, series_ids: Sequence[int], start_ms: int, end_ms: int, refuse_above: int | None = None
    ) -> Samples:
        raise NotImplementedError

    def latest(self, series_ids: Sequence[int]) -> dict[int, tuple[int, float]]:
        raise NotImplementedError

    def raw(
        self, series_ids: Sequence[int], start_ms: int, end_ms: int, refuse_above: int | None = None
    ) -> dict[int, Points]:
        """Samples within [start_ms, end_ms] of each series, ascending, as lists."""
        return points_by_series(self.raw_samples(series_ids, start_ms, end_ms, refuse_above))

    def newest_timestamps(self, series_ids: Sequence[int]) -> dict[int, int]:
        return {series_id: newest for series_id, (newest, _) in self.latest(series_ids).items()}

    def stored_timestamps(self, series_id: int, start_ms: int, end_ms: int) -> set[int]:
        return set(self.raw([series_id], start_ms, end_ms).get(series_id, ([], []))[0])
