"""PromQL's values, held for every step of a query at once.

An instant vector is a (series x steps) array of values with a mask of where a sample exists; a
scalar is one value per step; a range vector (a matrix) keeps each series' samples and, per step,
the end of the window that step looks at; a string is a string.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class Matrix:
    """A range vector: per series its samples (ascending, stale markers removed) and per step the
    window (end - range_ms, end] it covers."""

    labels: list[LabelSet]
    times: list[np.ndarray]
    values: list[np.ndarray]
    range_ms: int
    ends: np.ndarray  # per step, ms
    from_selector: bool = field(default=True)

    def windows(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Per step, the positions [lo, hi) of series `index`'s samples inside its window."""
        times = self.times[index]
        lo = np.searchsorted(times, self.ends - self.range_ms, side="right")
        hi = np.searchsorted(times, self.ends, side="right")
        return lo, hi


@dataclass
class Text:
    value: str


Value = Scalar | Vector | Matrix | Text


def kind(value: Value) -> str:
    return {Scalar: "scalar", Vector: "instant vector", Matrix: "range vector", Text: "string"}[type(value)]


def without_name(labels: LabelSet) -> LabelSet:
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
