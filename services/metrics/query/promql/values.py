"""PromQL's values, held for every step of a query at once.

An instant vector is a (series x steps) array of values with a mask of where a sample exists; a
scalar is one value per step; a range vector (a matrix) keeps each series' samples and, per step,
the end of the window that step looks at; a string is a string.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np

from services.common.errors import FailedPrecondition, Unavailable
from services.metrics.domain import METRIC_NAME, LabelSet

STALE_NAN_BITS = 0x7FF0000000000002
"""Prometheus' staleness marker: a NaN with this exact bit pattern."""


class EvaluationError(FailedPrecondition):
    """A query that parsed but cannot be answered (Prometheus' `execution` error)."""


class QueryTimeout(Unavailable):
    """The query ran past its time limit (Prometheus' `timeout` error)."""


class QueryCancelled(Unavailable):
    """The client went away; the work was stopped (Prometheus' `canceled` error)."""


@dataclass
class Scalar:
    values: np.ndarray  # one per step


@dataclass
class Vector:
    labels: list[LabelSet]
    values: np.ndarray  # (series, steps)
    present: np.ndarray  # (series, steps) bool
    sample_times: np.ndarray | None = None
    """(series, steps) sample timestamps in ms, kept only for a plain selector (`timestamp()`)."""
    order: list[int] | None = None
    """Row order of an instant answer set by `sort*`; None: any order."""

    @classmethod
    def empty(cls, steps: int) -> Vector:
        return cls([], np.zeros((0, steps)), np.zeros((0, steps), dtype=bool))

    def rows(self, chosen: list[int]) -> Vector:
        return Vector([self.labels[i] for i in chosen], self.values[chosen], self.present[chosen])


class _Split(Sequence[np.ndarray]):
    """One flat array seen as per-series arrays, split only when someone looks (most functions
    work on the flat form and never do)."""

    def __init__(self, flat: np.ndarray, cuts: np.ndarray) -> None:
        self._flat = flat
        self._cuts = cuts
        self._parts: list[np.ndarray] | None = None

    def _split(self) -> list[np.ndarray]:
        if self._parts is None:
            self._parts = np.split(self._flat, self._cuts)
        return self._parts

    def __len__(self) -> int:
        return len(self._cuts) + 1

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        return self._split()[index]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self._split())


@dataclass
class Matrix:
    """A range vector: per series its samples (ascending, stale markers removed) and per step the
    window (end - range_ms, end] it covers."""

    labels: list[LabelSet]
    times: Sequence[np.ndarray]
    values: Sequence[np.ndarray]
    range_ms: int
    ends: np.ndarray  # per step, ms
    from_selector: bool = field(default=True)
    flat_form: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    """flat()'s answer when the matrix was built from it."""

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every series' samples end to end (times, values) and where each series starts (one
        more entry: the end)."""
        if self.flat_form is not None:
            return self.flat_form
        counts = np.fromiter((len(t) for t in self.times), dtype=np.int64, count=len(self.times))
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        if not len(self.times):
            return np.zeros(0, dtype=np.int64), np.zeros(0), offsets
        return np.concatenate(self.times), np.concatenate(self.values), offsets

    @classmethod
    def from_flat(
        cls, labels: list[LabelSet], times: np.ndarray, values: np.ndarray, offsets: np.ndarray, range_ms: int,
        ends: np.ndarray,
    ) -> Matrix:  # fmt: skip
        cuts = offsets[1:-1]
        if not labels:
            return cls([], [], [], range_ms, ends)
        matrix = cls(labels, _Split(times, cuts), _Split(values, cuts), range_ms, ends)
        matrix.flat_form = (times, values, offsets)
        return matrix

    def all_windows(self, times: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per series and step, the positions [lo, hi) of the samples inside the window, into the
        flat arrays (flat()'s `times` and `offsets`)."""
        lo = search_series(times, offsets, self.ends - self.range_ms)
        return lo, search_series(times, offsets, self.ends)


def search_series(times: np.ndarray, offsets: np.ndarray, points: np.ndarray) -> np.ndarray:
    """For every series laid end to end in `times` (series i at offsets[i]:offsets[i + 1],
    ascending) and every point, the position after the series' last sample at or before it (numpy's
    searchsorted side="right"), as a (series x points) array of positions into `times`. Each
    series' times are lifted into a band of their own, so one sorted search answers them all."""
    series = len(offsets) - 1
    if not series or not len(points):
        return np.zeros((series, len(points)), dtype=np.int64)
    base = min(int(times.min()) if len(times) else 0, int(points.min()))
    span = max(int(times.max()) if len(times) else 0, int(points.max())) - base + 1
    if series * span >= 2**62:  # absurd time spans: one search per series
        return np.array(
            [
                offsets[i] + np.searchsorted(times[offsets[i] : offsets[i + 1]], points, side="right")
                for i in range(series)
            ]
        )
    band = np.arange(series, dtype=np.int64) * span
    keys = np.repeat(band, np.diff(offsets)) + (times - base)
    found = np.searchsorted(keys, (band[:, None] + (points - base)[None, :]).ravel(), side="right")
    return found.reshape(series, len(points))


@dataclass
class Text:
    value: str


Value = Scalar | Vector | Matrix | Text


def kind(value: Value) -> str:
    return {Scalar: "scalar", Vector: "instant vector", Matrix: "range vector", Text: "string"}[type(value)]


@functools.lru_cache(maxsize=1 << 17)
def without_name(labels: LabelSet) -> LabelSet:
    """The labels without `__name__`; remembered, since the same series come back query after
    query (an alerting cycle asks about the same series hundreds of times)."""
    return tuple(pair for pair in labels if pair[0] != METRIC_NAME)


def with_label(labels: LabelSet, name: str, value: str) -> LabelSet:
    """The labels with `name` set to `value` (removed when `value` is empty), kept sorted."""
    kept = [pair for pair in labels if pair[0] != name]
    if value:
        kept.append((name, value))
    return tuple(sorted(kept))


def merge_same_labels(vector: Vector, clash: str = "vector cannot contain metrics with the same labelset") -> Vector:
    """Rows that came to carry the same labels (after a name was dropped, a label replaced) become
    one row; two of them with a sample at the same step is Prometheus' duplicate-labelset error."""
    if len(set(vector.labels)) == len(vector.labels):
        return vector
    rows: dict[LabelSet, list[int]] = {}
    for index, labels in enumerate(vector.labels):
        rows.setdefault(labels, []).append(index)
    labels_out, values_out, present_out = [], [], []
    for labels, members in rows.items():
        if len(members) == 1:
            values, present = vector.values[members[0]], vector.present[members[0]]
        else:
            masks = vector.present[members]
            if np.any(masks.sum(axis=0) > 1):
                raise EvaluationError(clash)
            present = masks.any(axis=0)
            values = np.where(masks, vector.values[members], 0.0).sum(axis=0)
        labels_out.append(labels)
        values_out.append(values)
        present_out.append(present)
    return Vector(labels_out, np.array(values_out), np.array(present_out))
