"""PromQL's aggregation operators over an instant vector, per group (`by` / `without`) and step:
sum, avg, min, max, group, count, stddev, stdvar, quantile, count_values, topk, bottomk, limitk,
limit_ratio."""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import promql_parser as ast

from services.common.errors import InvalidArgument
from services.common.labels import is_label_name
from services.metrics.domain import METRIC_NAME, LabelSet
from services.metrics.query.promql.numeric import quantile_of_sorted, sort_nan_first
from services.metrics.query.promql.values import Text, Vector, with_label

if TYPE_CHECKING:
    from services.metrics.query.promql.evaluator import Evaluator


def grouping(modifier: Any) -> Callable[[LabelSet], LabelSet]:
    if modifier is None:
        return lambda labels: ()
    if modifier.type == ast.AggModifierType.By:
        return functools.partial(_kept, frozenset(modifier.labels))
    return functools.partial(_dropped, frozenset({*modifier.labels, METRIC_NAME}))


# Remembered: the same series and groupings come back query after query (an alerting cycle).
@functools.lru_cache(maxsize=1 << 17)
def _kept(wanted: frozenset[str], labels: LabelSet) -> LabelSet:
    return tuple(pair for pair in labels if pair[0] in wanted)


@functools.lru_cache(maxsize=1 << 17)
def _dropped(unwanted: frozenset[str], labels: LabelSet) -> LabelSet:
    return tuple(pair for pair in labels if pair[0] not in unwanted)


def aggregate(ev: Evaluator, node: Any, steps: np.ndarray) -> Vector:
    op = str(node.op)
    if op not in _COMBINE and op not in _SELECT and op != "count_values":
        raise InvalidArgument(f"unknown aggregation {op}")
    parameter: Any = None
    if op in ("topk", "bottomk", "limitk", "limit_ratio", "quantile"):
        parameter = ev.scalar(node.param, steps, op).values
    elif op == "count_values":
        label = ev.eval(node.param, steps)
        if not isinstance(label, Text):
            raise InvalidArgument("count_values expects a string as its label name")
        parameter = label.value
        if not is_label_name(parameter):
            raise InvalidArgument(f"invalid label name {parameter!r}")
    vector = ev.vector(node.expr, steps, op)
    key = grouping(node.modifier)
    if op == "count_values":
        return _count_values(ev, vector, key, parameter)
    keys = [key(labels) for labels in vector.labels]
    if op in _OF_ONE and len(set(keys)) == len(keys):
        # Every group is one series (`avg by (host)` over one series per host): each result is
        # that series' own value (or a constant), exactly what the combination gives, at once.
        return Vector(keys, _OF_ONE[op](vector.values), vector.present.copy())
    groups: dict[LabelSet, list[int]] = {}
    for index, group_key in enumerate(keys):
        groups.setdefault(group_key, []).append(index)
    if op in _SELECT:
        present = np.zeros_like(vector.present)
        for members in groups.values():
            ev.check()
            rows = np.array(members)
            present[rows] = _SELECT[op](
                vector.values[rows], vector.present[rows], parameter, [vector.labels[i] for i in members]
            )
        return Vector(vector.labels, vector.values, present)
    if not groups:
        return Vector.empty(len(steps))
    ordered = list(groups.items())
    values_out = np.empty((len(ordered), len(steps)), dtype=np.float64)
    present_out = np.empty((len(ordered), len(steps)), dtype=bool)
    looped = range(len(ordered))
    if op in _OF_ONE:
        # The groups of one series, all at once (as above).
        singles = [i for i, (_, members) in enumerate(ordered) if len(members) == 1]
        if singles:
            rows = np.array([ordered[i][1][0] for i in singles])
            values_out[singles] = _OF_ONE[op](vector.values[rows])
            present_out[singles] = vector.present[rows]
            looped = [i for i, (_, members) in enumerate(ordered) if len(members) > 1]  # type: ignore[assignment]
    for position in looped:
        ev.check()
        members = ordered[position][1]
        values, present = vector.values[members], vector.present[members]
        counted = present.sum(axis=0)
        with np.errstate(all="ignore"):
            values_out[position] = _COMBINE[op](values, present, counted, parameter)
        present_out[position] = counted > 0
    return Vector([labels for labels, _ in ordered], values_out, present_out)


def _sum(values: np.ndarray, present: np.ndarray, counted: np.ndarray, _: Any) -> np.ndarray:
    return np.sum(values, axis=0, where=present)


def _avg(values: np.ndarray, present: np.ndarray, counted: np.ndarray, _: Any) -> np.ndarray:
    return np.sum(values, axis=0, where=present) / counted


def _variance(values: np.ndarray, present: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """Population variance; 0 for a group of one sample whatever its value (NaN and ±Inf too), as
    Prometheus' running (Welford) computation gives."""
    mean = np.sum(values, axis=0, where=present) / counted
    variance = np.sum((values - mean) ** 2, axis=0, where=present) / counted
    return np.where(counted == 1, 0.0, variance)


def _extreme(largest: bool) -> Callable[[np.ndarray, np.ndarray, np.ndarray, Any], np.ndarray]:
    def run(values: np.ndarray, present: np.ndarray, counted: np.ndarray, _: Any) -> np.ndarray:
        """min/max of the present values; NaN only when every present value is NaN (a number always
        wins over NaN, as in Prometheus)."""
        fill = -np.inf if largest else np.inf
        numbers = present & ~np.isnan(values)
        masked = np.where(numbers, values, fill)
        result = masked.max(axis=0) if largest else masked.min(axis=0)
        return np.where((numbers.sum(axis=0) == 0) & (counted > 0), np.nan, result)

    return run


def _quantile(values: np.ndarray, present: np.ndarray, counted: np.ndarray, q: np.ndarray) -> np.ndarray:
    out = np.full(values.shape[1], np.nan)
    for step in np.flatnonzero(counted > 0).tolist():
        out[step] = quantile_of_sorted(float(q[step]), sort_nan_first(values[present[:, step], step]))
    return out


_COMBINE: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, Any], np.ndarray]] = {
    "sum": _sum,
    "avg": _avg,
    "min": _extreme(largest=False),
    "max": _extreme(largest=True),
    "count": lambda values, present, counted, _: counted.astype(np.float64),
    "group": lambda values, present, counted, _: np.ones(values.shape[1]),
    "stdvar": lambda values, present, counted, _: _variance(values, present, counted),
    "stddev": lambda values, present, counted, _: np.sqrt(_variance(values, present, counted)),
    "quantile": _quantile,
}


_OF_ONE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sum": lambda values: values,
    "avg": lambda values: values,
    "min": lambda values: values,
    "max": lambda values: values,
    "count": lambda values: np.ones_like(values),
    "group": lambda values: np.ones_like(values),
    "stdvar": lambda values: np.zeros_like(values),
    "stddev": lambda values: np.zeros_like(values),
}
"""What each combination gives for a group of a single series (see `_variance` for the zeros)."""


def _ranked(largest: bool) -> Callable[[np.ndarray, np.ndarray, np.ndarray, list[LabelSet]], np.ndarray]:
    def run(values: np.ndarray, present: np.ndarray, k: np.ndarray, _: list[LabelSet]) -> np.ndarray:
        """topk/bottomk: per step the k largest (smallest) present samples; NaN ranks below every
        number either way."""
        rows = values.shape[0]
        number = present & ~np.isnan(values)
        tier = np.where(number, 0, np.where(present, 1, 2))
        secondary = np.where(number, -values if largest else values, 0.0)
        first = np.argsort(secondary, axis=0, kind="stable")
        second = np.argsort(np.take_along_axis(tier, first, axis=0), axis=0, kind="stable")
        order = np.take_along_axis(first, second, axis=0)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(rows)[:, None], order.shape), axis=0)
        wanted = np.where(np.isfinite(k), np.trunc(np.nan_to_num(k)), 0)
        return present & (rank < wanted[None, :])

    return run


def _limitk(values: np.ndarray, present: np.ndarray, k: np.ndarray, _: list[LabelSet]) -> np.ndarray:
    """The first k series (in label order) with a sample at each step."""
    wanted = np.where(np.isfinite(k), np.trunc(np.nan_to_num(k)), 0)
    return present & (np.cumsum(present, axis=0) <= wanted[None, :])


def _limit_ratio(values: np.ndarray, present: np.ndarray, ratio: np.ndarray, labels: list[LabelSet]) -> np.ndarray:
    """A stable sample of about `ratio` of the series, chosen by a hash of their labels (a
    negative ratio takes the complement, so r and r - 1 split the series in two)."""
    if np.any(np.abs(ratio) > 1) or np.any(np.isnan(ratio)):
        raise InvalidArgument("limit_ratio: the ratio must be between -1 and 1")
    offsets = np.array([_hash_fraction(lb) for lb in labels])[:, None]
    chosen = np.where(ratio[None, :] >= 0, offsets < ratio[None, :], offsets >= 1.0 + ratio[None, :])
    return present & chosen


def _hash_fraction(labels: LabelSet) -> float:
    digest = hashlib.blake2b("\xff".join(f"{n}\xff{v}" for n, v in labels).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / float(2**64)


_SELECT: dict[str, Callable[[np.ndarray, np.ndarray, Any, list[LabelSet]], np.ndarray]] = {
    "topk": _ranked(largest=True),
    "bottomk": _ranked(largest=False),
    "limitk": _limitk,
    "limit_ratio": _limit_ratio,
}


def _count_values(ev: Evaluator, vector: Vector, key: Callable[[LabelSet], LabelSet], label: str) -> Vector:
    """count_values: per group and step, how many series have each value (the value, formatted
    as Go's FormatFloat 'f', becomes the label). Its output can have a row per distinct value, far
    more than its input: each new row is held before it is allocated (and the whole again as the
    aggregation's result, as every derived value is)."""
    steps = vector.values.shape[1]
    counts: dict[LabelSet, np.ndarray] = {}
    for index, labels in enumerate(vector.labels):
        ev.check()
        base = key(labels)
        for step in np.flatnonzero(vector.present[index]).tolist():
            out = with_label(base, label, _plain(float(vector.values[index, step])))
            row = counts.get(out)
            if row is None:
                ev.hold(1, steps)
                row = counts[out] = np.zeros(steps)
            row[step] += 1
    if not counts:
        return Vector.empty(steps)
    rows = np.array(list(counts.values()))
    return Vector(list(counts), rows, rows > 0)


def _plain(value: float) -> str:
    """A value as Go's strconv.FormatFloat(v, 'f', -1, 64) writes it: shortest digits, no exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
