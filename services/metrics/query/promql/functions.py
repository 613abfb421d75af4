"""PromQL's functions: one table, name → how it evaluates its arguments.

Range functions see a matrix through per-step windows of sample positions [lo, hi); those whose
result depends on every sample of a window (regression, smoothing, changes, quantiles) read the
windows as a (steps x widest window) grid, so each works on all steps at once. Every function but
`last_over_time`, `label_*`, `sort*` and `vector` drops the metric name, as in Prometheus.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import promql_parser as ast

from services.common.errors import InvalidArgument
from services.common.labels import is_label_name
from services.common.patterns import compile_pattern
from services.metrics.domain import METRIC_NAME, LabelSet
from services.metrics.query.promql.numeric import quantile_of_sorted, sort_nan_first
from services.metrics.query.promql.values import (
    Scalar,
    Text,
    Value,
    Vector,
    merge_same_labels,
    with_label,
    without_name,
)

if TYPE_CHECKING:
    from services.metrics.query.promql.evaluator import Evaluator


def call(ev: Evaluator, node: Any, steps: np.ndarray) -> Value:
    name = node.func.name
    handler = FUNCTIONS.get(name)
    if handler is None:
        from services.metrics.query.promql.evaluator import Unsupported

        raise Unsupported(f"unsupported in InfraWatch's PromQL: function {name}()")
    return handler(ev, list(node.args), steps)


# --- windows over a matrix ---------------------------------------------------------------------


@dataclass
class Windows:
    """One series' samples and, per step, its window [lo, hi) of sample positions."""

    times: np.ndarray
    values: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    ends: np.ndarray  # per step, the window's end (ms)
    range_ms: int
    steps: np.ndarray  # the evaluation steps (predict_linear's intercept time)
    check: Callable[[], None] = field(default=lambda: None)
    """The query's deadline and cancellation check, for loops that run per window."""

    def checked(self, items: Iterable[int], period: int = 256) -> Iterator[int]:
        """`items`, checking the query's limits every `period` of them."""
        for turn, item in enumerate(items):
            if turn % period == 0:
                self.check()
            yield item

    @property
    def counts(self) -> np.ndarray:
        return self.hi - self.lo

    def reduce(self, ufunc: np.ufunc, data: np.ndarray | None = None, lo: np.ndarray | None = None) -> np.ndarray:
        """ufunc over each window (meaningless where the window is empty)."""
        source = self.values if data is None else data
        starts = self.lo if lo is None else lo
        padded = np.append(source, 0.0)
        bounds = np.empty(2 * len(starts), dtype=np.int64)
        bounds[0::2], bounds[1::2] = starts, self.hi
        if not len(bounds):
            return np.zeros(0)
        return ufunc.reduceat(padded, bounds)[0::2]

    def grid(self, data: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The windows as a (steps x widest) grid of values and a mask of the real ones."""
        source = self.values if data is None else data
        width = int(self.counts.max()) if len(self.lo) else 0
        index = self.lo[:, None] + np.arange(max(width, 1))[None, :]
        mask = index < self.hi[:, None]
        if not len(source):
            return np.zeros(index.shape), mask & False
        return source[np.minimum(index, len(source) - 1)], mask


RangeFunction = Callable[[Windows, list[np.ndarray]], tuple[np.ndarray, np.ndarray]]


def _extrapolated(window: Windows, counter: bool, per_second: bool) -> tuple[np.ndarray, np.ndarray]:
    """rate / increase / delta as Prometheus' extrapolatedRate: to the window's edges, at most
    half an average sample interval beyond the first/last sample (to the edge when within 1.1
    intervals of it); a counter is not extrapolated below zero; a decrease is a counter reset."""
    ts, vs, lo, hi = window.times, window.values, window.lo, window.hi
    present = window.counts >= 2
    out = np.zeros(len(lo))
    if not present.any():
        return out, present
    first_i, last_i = lo[present], hi[present] - 1
    first_t, last_t = ts[first_i].astype(np.float64), ts[last_i].astype(np.float64)
    first_v, last_v = vs[first_i], vs[last_i]
    result = last_v - first_v
    if counter:
        drops = np.zeros(len(vs))
        if len(vs) > 1:
            drops[1:] = np.where(vs[1:] < vs[:-1], vs[:-1], 0.0)
        sub = Windows(ts, vs, lo[present] + 1, hi[present], window.ends[present], window.range_ms, window.steps)
        with np.errstate(all="ignore"):
            result = result + sub.reduce(np.add, drops)
    ends = window.ends[present].astype(np.float64)
    to_start = (first_t - (ends - window.range_ms)) / 1000
    to_end = (ends - last_t) / 1000
    sampled = (last_t - first_t) / 1000
    average = sampled / (window.counts[present] - 1)
    if counter:
        with np.errstate(all="ignore"):
            to_zero = sampled * (first_v / result)
        use_zero = (result > 0) & (first_v >= 0) & (to_zero < to_start)
        to_start = np.where(use_zero, to_zero, to_start)
    threshold = average * 1.1
    interval = sampled + np.where(to_start < threshold, to_start, average / 2)
    interval = interval + np.where(to_end < threshold, to_end, average / 2)
    with np.errstate(all="ignore"):
        result = result * (interval / sampled)
        if per_second:
            result = result / (window.range_ms / 1000)
    out[present] = result
    return out, present


def _instant_rate(window: Windows, counter: bool) -> tuple[np.ndarray, np.ndarray]:
    """irate / idelta: from the window's last two samples."""
    ts, vs = window.times, window.values
    present = window.counts >= 2
    out = np.zeros(len(window.lo))
    if not present.any():
        return out, present
    last_i = window.hi[present] - 1
    last, previous = vs[last_i], vs[last_i - 1]
    result = np.where(last < previous, last, last - previous) if counter else last - previous
    elapsed = (ts[last_i] - ts[last_i - 1]) / 1000
    if counter:
        with np.errstate(all="ignore"):
            result = result / elapsed
    out[present] = result
    present = present.copy()
    present[present] = elapsed > 0
    return out, present


def _grid_variance(window: Windows) -> np.ndarray:
    values, mask = window.grid()
    counts = np.maximum(window.counts, 1)
    with np.errstate(all="ignore"):
        mean = np.sum(values, axis=1, where=mask) / counts
        return np.sum((values - mean[:, None]) ** 2, axis=1, where=mask) / counts


def _regression(window: Windows, intercept_at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope (per second) and the intercept at `intercept_at` (ms), per window; a
    window of one repeated value has slope 0 (NaN for an infinite one)."""
    values, mask = window.grid()
    times, _ = window.grid(window.times.astype(np.float64))
    x = (times - intercept_at[:, None]) / 1000
    n = window.counts.astype(np.float64)
    with np.errstate(all="ignore"):
        sum_x = np.sum(x, axis=1, where=mask)
        sum_y = np.sum(values, axis=1, where=mask)
        sum_xy = np.sum(x * values, axis=1, where=mask)
        sum_x2 = np.sum(x * x, axis=1, where=mask)
        slope = (sum_xy - sum_x * sum_y / n) / (sum_x2 - sum_x * sum_x / n)
        intercept = sum_y / n - slope * sum_x / n
    first = values[:, 0]
    constant = np.all((values == first[:, None]) | ~mask, axis=1)
    slope = np.where(constant, np.where(np.isinf(first), np.nan, 0.0), slope)
    intercept = np.where(constant, np.where(np.isinf(first), np.nan, first), intercept)
    return slope, intercept


def _deriv(window: Windows, _: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    present = window.counts >= 2
    if not present.any():
        return np.zeros(len(window.lo)), present
    first_times = window.times[np.minimum(window.lo, len(window.times) - 1)]
    slope, _intercept = _regression(window, first_times)
    return slope, present


def _predict_linear(window: Windows, parameters: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    present = window.counts >= 2
    if not present.any():
        return np.zeros(len(window.lo)), present
    slope, intercept = _regression(window, window.steps)
    return slope * parameters[0] + intercept, present


def _changes(decreases_only: bool) -> RangeFunction:
    def run(window: Windows, _: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        vs = window.values
        if len(vs) > 1:
            previous, current = vs[:-1], vs[1:]
            if decreases_only:
                marks = current < previous
            else:
                marks = ~((current == previous) | (np.isnan(current) & np.isnan(previous)))
            flags = np.concatenate([[0.0], marks.astype(np.float64)])
        else:
            flags = np.zeros(len(vs))
        counted = window.counts > 1
        lo = np.minimum(window.lo + 1, window.hi)
        totals = np.where(counted, window.reduce(np.add, flags, lo=lo), 0.0)
        return totals, window.counts > 0

    return run


def _smoothing(window: Windows, parameters: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """double_exponential_smoothing (Prometheus 2's holt_winters): level and trend smoothed with
    factors sf and tf, both in (0, 1)."""
    smoothing, trend = parameters
    for factor, what in ((smoothing, "smoothing"), (trend, "trend")):
        if np.any((factor <= 0) | (factor >= 1)):
            bad = float(factor[(factor <= 0) | (factor >= 1)][0])
            raise InvalidArgument(f"invalid {what} factor. Expected: 0 < {what[0]}f < 1, got: {bad:f}")
    values, mask = window.grid()
    present = window.counts >= 2
    if values.shape[1] < 2:
        return np.zeros(len(window.lo)), present
    level = values[:, 0].copy()
    slope = values[:, 1] - values[:, 0]
    before = np.zeros_like(level)
    for i in window.checked(range(1, values.shape[1])):
        live = mask[:, i]
        if i > 1:
            slope = np.where(live, trend * (level - before) + (1 - trend) * slope, slope)
        new_level = smoothing * values[:, i] + (1 - smoothing) * (level + slope)
        before = np.where(live, level, before)
        level = np.where(live, new_level, level)
    return level, present


def _quantile_over_time(window: Windows, parameters: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    present = window.counts > 0
    out = np.zeros(len(window.lo))
    q = parameters[0]
    for index in window.checked(np.flatnonzero(present).tolist()):
        out[index] = quantile_of_sorted(
            float(q[index]), sort_nan_first(window.values[window.lo[index] : window.hi[index]])
        )
    return out, present


def _mad_over_time(window: Windows, _: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    present = window.counts > 0
    out = np.zeros(len(window.lo))
    for index in window.checked(np.flatnonzero(present).tolist()):
        values = window.values[window.lo[index] : window.hi[index]]
        median = quantile_of_sorted(0.5, sort_nan_first(values))
        out[index] = quantile_of_sorted(0.5, sort_nan_first(np.abs(values - median)))
    return out, present


def _avg_over_time(window: Windows, _: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        return window.reduce(np.add) / window.counts, window.counts > 0


def _extreme_over_time(largest: bool) -> RangeFunction:
    def run(window: Windows, _: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        # fmax/fmin skip NaN unless all are NaN: Prometheus' rule (a number replaces NaN).
        return window.reduce(np.fmax if largest else np.fmin), window.counts > 0

    return run


def _edge_over_time(last: bool) -> RangeFunction:
    def run(window: Windows, _: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if not len(window.values):
            return np.zeros(len(window.hi)), window.counts > 0
        index = np.maximum(window.hi - 1, 0) if last else np.minimum(window.lo, len(window.values) - 1)
        return window.values[index], window.counts > 0

    return run


RANGE_FUNCTIONS: dict[str, RangeFunction] = {
    "rate": lambda w, _: _extrapolated(w, counter=True, per_second=True),
    "increase": lambda w, _: _extrapolated(w, counter=True, per_second=False),
    "delta": lambda w, _: _extrapolated(w, counter=False, per_second=False),
    "irate": lambda w, _: _instant_rate(w, counter=True),
    "idelta": lambda w, _: _instant_rate(w, counter=False),
    "deriv": _deriv,
    "predict_linear": _predict_linear,
    "changes": _changes(decreases_only=False),
    "resets": _changes(decreases_only=True),
    "double_exponential_smoothing": _smoothing,
    "sum_over_time": lambda w, _: (w.reduce(np.add), w.counts > 0),
    "avg_over_time": _avg_over_time,
    "min_over_time": _extreme_over_time(largest=False),
    "max_over_time": _extreme_over_time(largest=True),
    "count_over_time": lambda w, _: (w.counts.astype(np.float64), w.counts > 0),
    "last_over_time": _edge_over_time(last=True),
    "first_over_time": _edge_over_time(last=False),
    "present_over_time": lambda w, _: (np.ones(len(w.lo)), w.counts > 0),
    "stdvar_over_time": lambda w, _: (_grid_variance(w), w.counts > 0),
    "stddev_over_time": lambda w, _: (np.sqrt(_grid_variance(w)), w.counts > 0),
    "quantile_over_time": _quantile_over_time,
    "mad_over_time": _mad_over_time,
}
KEEPS_NAME = frozenset({"last_over_time", "first_over_time"})
GRID_FUNCTIONS = frozenset(
    {"stdvar_over_time", "stddev_over_time", "deriv", "predict_linear", "double_exponential_smoothing"}
)
"""Functions that lay each step's window out as a row of a grid (Windows.grid): their batches are
sized by the widest window."""
_LEADING_PARAMETER = frozenset({"quantile_over_time"})


BATCH_CELLS = 1 << 16
"""How many (step x window sample) cells one batch of series may spread over: functions that lay
their windows out as a grid (stddev_over_time, deriv, ...) allocate that much, and a grid that
fits the CPU cache runs 30 % faster than one twice its size (measured on deriv over 100 series)."""


def _batches(widths: np.ndarray, steps: int) -> list[tuple[int, int, int, int]]:
    """Work in units of (first series, last series, first step, last step) whose steps x widest
    window stays within BATCH_CELLS: consecutive series together, and a series whose windows are
    too wide for that (a day of one-second samples) a few steps at a time."""
    widest_of_all = int(widths.max(initial=1))
    if widest_of_all <= 1 and steps <= BATCH_CELLS:
        # Windows counted one cell each (every function but the grid ones): plain runs of series.
        per = max(1, BATCH_CELLS // steps)
        return [(first, min(len(widths), first + per), 0, steps) for first in range(0, len(widths), per)]
    if len(widths) * steps * widest_of_all <= BATCH_CELLS:
        return [(0, len(widths), 0, steps)] if len(widths) else []
    batches: list[tuple[int, int, int, int]] = []
    first, widest = 0, 0
    for index, width in enumerate(np.maximum(widths, 1).tolist()):
        if steps * width > BATCH_CELLS:
            if index > first:
                batches.append((first, index, 0, steps))
            per = max(1, BATCH_CELLS // width)
            batches.extend((index, index + 1, since, min(steps, since + per)) for since in range(0, steps, per))
            first, widest = index + 1, 0
            continue
        widest = max(widest, width)
        if index > first and (index - first + 1) * steps * widest > BATCH_CELLS:
            batches.append((first, index, 0, steps))
            first, widest = index, width
    if first < len(widths):
        batches.append((first, len(widths), 0, steps))
    return batches


def _range_function(name: str) -> Callable[[Evaluator, list[Any], np.ndarray], Value]:
    compute = RANGE_FUNCTIONS[name]

    def run(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
        if name in _LEADING_PARAMETER:
            parameters = [ev.scalar(args[0], steps, name).values]
            matrix = ev.matrix(args[1], steps, name)
        else:
            matrix = ev.matrix(args[0], steps, name)
            parameters = [ev.scalar(arg, steps, name).values for arg in args[1:]]
        if not matrix.labels:
            return Vector.empty(len(steps))
        ev.hold(len(matrix.labels), len(steps))
        times, values, offsets = matrix.flat()
        lo, hi = matrix.all_windows(times, offsets)
        rows = np.zeros(lo.shape, dtype=np.float64)
        masks = np.zeros(lo.shape, dtype=bool)
        widths = (hi - lo).max(axis=1, initial=0) if name in GRID_FUNCTIONS else np.ones(len(lo), dtype=np.int64)
        for first, last, since, until in _batches(widths, len(steps)):
            # Series [first, last) at steps [since, until) evaluated together, their windows laid
            # end to end.
            ev.check()
            base, count = int(offsets[first]), last - first
            window = Windows(
                times[base : offsets[last]],
                values[base : offsets[last]],
                lo[first:last, since:until].ravel() - base,
                hi[first:last, since:until].ravel() - base,
                np.tile(matrix.ends[since:until], count),
                matrix.range_ms,
                np.tile(steps[since:until], count),
                ev.check,
            )
            computed, present = compute(window, [np.tile(p[since:until], count) for p in parameters])
            rows[first:last, since:until] = computed.reshape(count, until - since)
            masks[first:last, since:until] = present.reshape(count, until - since)
        labels = matrix.labels if name in KEEPS_NAME else [without_name(lb) for lb in matrix.labels]
        return merge_same_labels(Vector(labels, rows, masks))

    return run


def _absent_over_time(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
    matrix = ev.matrix(args[0], steps, "absent_over_time")
    times, _, offsets = matrix.flat()
    lo, hi = matrix.all_windows(times, offsets)
    return _absence(args[0], (hi > lo).sum(axis=0) == 0)


def _absent(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
    vector = ev.vector(args[0], steps, "absent")
    seen = np.zeros(len(steps), dtype=bool)
    if vector.labels:
        seen |= vector.present.any(axis=0)
    return _absence(args[0], ~seen)


def _absence(node: Any, missing: np.ndarray) -> Vector:
    """absent*'s answer: 1 where nothing was found, labelled with the selector's equality
    matchers (a label matched twice is left out)."""
    selector = node.vector_selector if isinstance(node, ast.MatrixSelector) else node
    labels: dict[str, str] = {}
    if isinstance(selector, ast.VectorSelector):
        repeated: set[str] = set()
        for matcher in selector.matchers.matchers:
            if matcher.name == METRIC_NAME:
                continue
            if matcher.name in labels:
                repeated.add(matcher.name)
            if str(matcher.op) == "MatchOp.Equal":
                labels[matcher.name] = matcher.value
        for name in repeated:
            labels.pop(name, None)
    return Vector([tuple(sorted(labels.items()))], np.ones((1, len(missing))), missing[None, :].copy())


# --- functions of instant vectors ------------------------------------------------------------------


def _elementwise(
    name: str, compute: Callable[[np.ndarray, list[np.ndarray]], np.ndarray], optional: int = 0
) -> Callable[[Evaluator, list[Any], np.ndarray], Value]:
    def run(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
        vector = ev.vector(args[0], steps, name)
        parameters = [ev.scalar(arg, steps, name).values[None, :] for arg in args[1:]]
        with np.errstate(all="ignore"):
            values = compute(vector.values, parameters)
        return merge_same_labels(Vector([without_name(lb) for lb in vector.labels], values, vector.present))

    return run


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray, list[np.ndarray]], np.ndarray]:
    return lambda values, _: fn(values)


def _round(values: np.ndarray, parameters: list[np.ndarray]) -> np.ndarray:
    inverse = 1.0 / parameters[0] if parameters else 1.0
    return np.floor(values * inverse + 0.5) / inverse


def _clamp(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
    vector = ev.vector(args[0], steps, "clamp")
    low, high = (ev.scalar(arg, steps, "clamp").values for arg in args[1:3])
    values = np.maximum(low[None, :], np.minimum(high[None, :], vector.values))
    present = vector.present & (high >= low)[None, :]
    return merge_same_labels(Vector([without_name(lb) for lb in vector.labels], values, present))


_MATH: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs,
    "ceil": np.ceil,
    "floor": np.floor,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "ln": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "sgn": np.sign,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
    "asinh": np.arcsinh,
    "acosh": np.arccosh,
    "atanh": np.arctanh,
    "deg": np.degrees,
    "rad": np.radians,
}


def _calendar(part: str) -> Callable[[np.ndarray], np.ndarray]:
    """A part of the UTC date of Unix seconds (truncated, as Go's time.Unix(int64(v), 0))."""

    def compute(values: np.ndarray) -> np.ndarray:
        finite = np.isfinite(values)
        seconds = np.where(finite, np.trunc(np.where(finite, values, 0)), 0).astype(np.int64)
        at = seconds.astype("datetime64[s]")
        day = at.astype("datetime64[D]")
        month = at.astype("datetime64[M]")
        year = at.astype("datetime64[Y]")
        if part == "minute":
            result = (at - day).astype(np.int64) // 60 % 60
        elif part == "hour":
            result = (at - day).astype(np.int64) // 3600
        elif part == "day_of_month":
            result = (day - month.astype("datetime64[D]")).astype(np.int64) + 1
        elif part == "day_of_week":
            result = (day.astype(np.int64) + 4) % 7  # 1970-01-01 was a Thursday
        elif part == "day_of_year":
            result = (day - year.astype("datetime64[D]")).astype(np.int64) + 1
        elif part == "days_in_month":
            result = ((month + 1).astype("datetime64[D]") - month.astype("datetime64[D]")).astype(np.int64)
        elif part == "month":
            result = month.astype(np.int64) % 12 + 1
        else:
            result = year.astype(np.int64) + 1970
        return np.where(finite, result.astype(np.float64), np.nan)

    return compute


def _date_function(part: str) -> Callable[[Evaluator, list[Any], np.ndarray], Value]:
    compute = _calendar(part)

    def run(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
        if not args:
            return Vector([()], compute(steps / 1000)[None, :], np.ones((1, len(steps)), dtype=bool))
        vector = ev.vector(args[0], steps, part)
        return merge_same_labels(
            Vector([without_name(lb) for lb in vector.labels], compute(vector.values), vector.present)
        )

    return run


def _timestamp(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
    node = args[0]
    while isinstance(node, ast.ParenExpr):
        node = node.expr
    vector = ev.vector(node, steps, "timestamp")
    if isinstance(node, ast.VectorSelector) and vector.sample_times is not None:
        values = vector.sample_times / 1000
    else:
        values = np.broadcast_to(steps / 1000, vector.values.shape).copy()
    return merge_same_labels(Vector([without_name(lb) for lb in vector.labels], values, vector.present))


def _time(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
    return Scalar(steps / 1000)


def _pi(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
    return Scalar(np.full(len(steps), math.pi))


def _vector(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
    scalar = ev.scalar(args[0], steps, "vector")
    return Vector([()], scalar.values[None, :].copy(), np.ones((1, len(steps)), dtype=bool))


def _scalar(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
    vector = ev.vector(args[0], steps, "scalar")
    if not vector.labels:
        return Scalar(np.full(len(steps), np.nan))
    single = vector.present.sum(axis=0) == 1
    picked = np.where(vector.present, vector.values, 0).sum(axis=0)
    return Scalar(np.where(single, picked, np.nan))


def _sort(descending: bool) -> Callable[[Evaluator, list[Any], np.ndarray], Value]:
    def run(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
        vector = ev.vector(args[0], steps, "sort_desc" if descending else "sort")
        column = vector.values[:, 0] if vector.labels else np.zeros(0)
        nan = np.isnan(column)
        keyed = np.where(nan, 0.0, -column if descending else column)
        order = np.lexsort((keyed, nan)).tolist()  # NaN last
        return Vector(vector.labels, vector.values, vector.present, order=order)

    return run


def _natural_key(text: str) -> tuple[Any, ...]:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part)


def _sort_by_label(descending: bool) -> Callable[[Evaluator, list[Any], np.ndarray], Value]:
    def run(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
        vector = ev.vector(args[0], steps, "sort_by_label")
        names = [_string(ev, arg, steps, "sort_by_label") for arg in args[1:]]

        def key(index: int) -> tuple[Any, ...]:
            labels = dict(vector.labels[index])
            return (*(_natural_key(labels.get(name, "")) for name in names), vector.labels[index])

        order = sorted(range(len(vector.labels)), key=key, reverse=descending)
        return Vector(vector.labels, vector.values, vector.present, order=order)

    return run


def _string(ev: Evaluator, node: Any, steps: np.ndarray, what: str) -> str:
    value = ev.eval(node, steps)
    if not isinstance(value, Text):
        raise InvalidArgument(f"{what} expects a string argument")
    return value.value


def _label_name(name: str, what: str) -> str:
    if not is_label_name(name):
        raise InvalidArgument(f"invalid destination label name in {what}(): {name}")
    return name


def _expand(template: str, match: Any, group_count: int) -> str:
    """Go's regexp Expand: `$1`, `${1}`, `$name`, `${name}`; `$$` is a dollar; an unknown group is
    empty. (`$1x` names the group `1x`, as in Go.)"""
    out, position = [], 0
    groups = match.groupdict()
    while position < len(template):
        char = template[position]
        if char != "$" or position + 1 == len(template):
            out.append(char)
            position += 1
            continue
        following = template[position + 1]
        if following == "$":
            out.append("$")
            position += 2
            continue
        if following == "{":
            end = template.find("}", position + 2)
            name = template[position + 2 : end] if end > 0 else ""
            if end < 0 or not re.fullmatch(r"[A-Za-z0-9_]+", name):
                out.append(char)
                position += 1
                continue
            position = end + 1
        else:
            found = re.match(r"[A-Za-z0-9_]+", template[position + 1 :])
            if not found:
                out.append(char)
                position += 1
                continue
            name = found.group(0)
            position += 1 + len(name)
        if name.isdigit():
            number = int(name)
            out.append((match.group(number) or "") if number <= group_count else "")
        else:
            out.append(groups.get(name) or "")
    return "".join(out)


def _label_replace(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
    vector = ev.vector(args[0], steps, "label_replace")
    destination, replacement, source, regex = (_string(ev, arg, steps, "label_replace") for arg in args[1:5])
    _label_name(destination, "label_replace")
    pattern = compile_pattern(regex, "label_replace")
    relabelled: list[LabelSet] = []
    for labels in vector.labels:
        match = pattern.fullmatch(dict(labels).get(source, ""))
        relabelled.append(
            labels if match is None else with_label(labels, destination, _expand(replacement, match, pattern.groups))
        )
    return merge_same_labels(Vector(relabelled, vector.values, vector.present))


def _label_join(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
    vector = ev.vector(args[0], steps, "label_join")
    destination, separator, *sources = (_string(ev, arg, steps, "label_join") for arg in args[1:])
    _label_name(destination, "label_join")
    for source in sources:
        if not is_label_name(source):
            raise InvalidArgument(f"invalid source label name in label_join(): {source}")
    relabelled = []
    for labels in vector.labels:
        given = dict(labels)
        relabelled.append(with_label(labels, destination, separator.join(given.get(s, "") for s in sources)))
    return merge_same_labels(Vector(relabelled, vector.values, vector.present))


def _histogram_quantile(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
    """The φ-quantile of classic histograms: series grouped by their labels without `le`, buckets
    ordered by upper bound, made monotonic, and the quantile interpolated inside its bucket."""
    q = ev.scalar(args[0], steps, "histogram_quantile").values
    vector = ev.vector(args[1], steps, "histogram_quantile")
    groups: dict[LabelSet, list[tuple[float, int]]] = {}
    for index, labels in enumerate(vector.labels):
        bound = dict(labels).get("le")
        if bound is None:
            continue
        try:
            upper = float(bound)
        except ValueError:
            continue
        key = tuple(pair for pair in labels if pair[0] not in ("le", METRIC_NAME))
        groups.setdefault(key, []).append((upper, index))
    labels_out, values_out, present_out = [], [], []
    for key, buckets in groups.items():
        ev.check()
        buckets.sort()
        bounds = np.array([upper for upper, _ in buckets])
        rows = [index for _, index in buckets]
        counts, present = vector.values[rows], vector.present[rows]
        any_present = present.any(axis=0)
        result = np.full(len(steps), np.nan)
        whole = present.all(axis=0) & (len(set(bounds.tolist())) == len(bounds))
        if whole.any():
            result[whole] = _bucket_quantile(q[whole], bounds, counts[:, whole])
        for step in np.flatnonzero(any_present & ~whole).tolist():
            here = present[:, step]
            merged: dict[float, float] = {}
            for upper, count in zip(bounds[here].tolist(), counts[here, step].tolist(), strict=True):
                merged[upper] = merged.get(upper, 0.0) + count
            ordered = sorted(merged)
            result[step] = _bucket_quantile(
                q[step : step + 1], np.array(ordered), np.array([merged[u] for u in ordered])[:, None]
            )[0]
        labels_out.append(key)
        values_out.append(result)
        present_out.append(any_present)
    if not labels_out:
        return Vector.empty(len(steps))
    return merge_same_labels(Vector(labels_out, np.array(values_out), np.array(present_out)))


def _bucket_quantile(q: np.ndarray, bounds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Prometheus' bucketQuantile for each column of cumulative bucket counts (rows ascending by
    upper bound)."""
    columns = counts.shape[1]
    out = np.full(columns, np.nan)
    if len(bounds) < 2 or not math.isinf(bounds[-1]) or bounds[-1] < 0:
        out = np.where(q < 0, -np.inf, np.where(q > 1, np.inf, np.nan))
        return out
    counts = np.fmax.accumulate(counts, axis=0)  # made monotonic
    observations = counts[-1]
    with np.errstate(all="ignore"):
        rank = q * observations
        reached = counts[:-1] >= rank[None, :]
        bucket = np.where(reached.any(axis=0), np.argmax(reached, axis=0), len(bounds) - 1)
        previous = np.maximum(bucket - 1, 0)
        end = bounds[bucket]
        start = np.where(bucket > 0, bounds[previous], 0.0)
        below = np.where(bucket > 0, counts[previous, np.arange(columns)], 0.0)
        inside = counts[bucket, np.arange(columns)] - below
        value = start + (end - start) * ((rank - below) / inside)
    value = np.where(bucket == len(bounds) - 1, bounds[-2], value)
    value = np.where((bucket == 0) & (bounds[0] <= 0), bounds[0], value)
    value = np.where(observations == 0, np.nan, value)
    value = np.where(np.isnan(q), np.nan, np.where(q < 0, -np.inf, np.where(q > 1, np.inf, value)))
    return value


def _native_only(ev: Evaluator, args: list[Any], steps: np.ndarray) -> Value:
    """histogram_count & co. read native histograms, which are not stored: over float series they
    find nothing, as in Prometheus."""
    for arg in args:
        ev.eval(arg, steps)
    return Vector.empty(len(steps))


FUNCTIONS: dict[str, Callable[[Evaluator, list[Any], np.ndarray], Value]] = {
    **{name: _range_function(name) for name in RANGE_FUNCTIONS},
    **{name: _elementwise(name, _unary(fn)) for name, fn in _MATH.items()},
    **{
        name: _date_function(name)
        for name in ("minute", "hour", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "month", "year")
    },
    **{
        name: _native_only
        for name in (
            "histogram_count",
            "histogram_sum",
            "histogram_avg",
            "histogram_fraction",
            "histogram_stddev",
            "histogram_stdvar",
        )
    },
    "round": _elementwise("round", _round),
    "clamp": _clamp,
    "clamp_min": _elementwise("clamp_min", lambda values, p: np.maximum(p[0], values)),
    "clamp_max": _elementwise("clamp_max", lambda values, p: np.minimum(p[0], values)),
    "absent": _absent,
    "absent_over_time": _absent_over_time,
    "timestamp": _timestamp,
    "time": _time,
    "pi": _pi,
    "vector": _vector,
    "scalar": _scalar,
    "sort": _sort(descending=False),
    "sort_desc": _sort(descending=True),
    "sort_by_label": _sort_by_label(descending=False),
    "sort_by_label_desc": _sort_by_label(descending=True),
    "label_replace": _label_replace,
    "label_join": _label_join,
    "histogram_quantile": _histogram_quantile,
}
