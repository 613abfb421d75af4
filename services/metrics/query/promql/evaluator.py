"""The PromQL evaluator: walks the syntax tree once, every node evaluated for all steps at once.

Selection reads the store (the samples a window needs, under the query's budget); functions,
aggregations and operators live in their own modules and work on the values of `values.py`.
Steps are passed down explicitly because subqueries and the `@` modifier evaluate their inner
expression at steps of their own.

Semantics that matter for identical answers (Prometheus 3's):
- an instant selector takes a series' newest sample in (t - lookback, t]; a stale marker there
  means no value;
- a range selector `[r]` and a subquery take the samples in (t - r, t], stale markers dropped;
- a subquery `e[r:s]` evaluates `e` at the multiples of `s` (the evaluation interval, 1m, when
  `s` is left out), as Prometheus aligns them;
- `@ t`, `@ start()`, `@ end()` fix the evaluation time of a selector or subquery; `offset`
  (negative too) shifts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import promql_parser as ast

from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.selectors import Matcher, MatchType
from services.metrics.domain import METRIC_NAME, LabelSet, Series
from services.metrics.query.promql import aggregations, functions, operators
from services.metrics.query.promql.parser import parse
from services.metrics.query.promql.selection_cache import Samples, SelectionCache
from services.metrics.query.promql.values import (
    STALE_NAN_BITS,
    Matrix,
    QueryCancelled,
    QueryTimeout,
    Scalar,
    Text,
    Value,
    Vector,
    kind,
    search_series,
)
from services.metrics.query.use_cases import QueryContext, select_series
from services.metrics.storage.ports import TooManyPoints

MAX_STEPS = 11_000
DEFAULT_SUBQUERY_STEP_MS = 60_000
"""A subquery without a step uses the evaluation interval; Prometheus' default is 1m."""

_MATCH_TYPES = {
    "MatchOp.Equal": MatchType.EQUAL,
    "MatchOp.NotEqual": MatchType.NOT_EQUAL,
    "MatchOp.Re": MatchType.REGEX,
    "MatchOp.NotRe": MatchType.NOT_REGEX,
}
"""The parser's matcher operators (not hashable themselves) by their names."""


class Unsupported(InvalidArgument):
    """A valid PromQL construct InfraWatch does not evaluate (native histograms' functions, say)."""


@dataclass
class QueryLimits:
    """What one query may take: samples read, values held (series x steps, summed over the
    query's intermediate results), and time; `cancelled` tells that the client went away."""

    max_samples: int = 20_000_000
    max_points: int = 20_000_000
    timeout_s: float = 120.0
    cancelled: Callable[[], bool] = field(default=lambda: False)


@dataclass
class Result:
    """An evaluated query: its value and the steps (ms) it was evaluated at."""

    value: Value
    steps: np.ndarray


class Evaluator:
    """Evaluates one query; built per request (it holds the query's budget and clock)."""

    def __init__(
        self,
        ctx: QueryContext,
        lookback_ms: int,
        limits: QueryLimits | None = None,
        cache: SelectionCache | None = None,
    ) -> None:
        self._ctx = ctx
        self._cache = cache
        self._lookback_ms = lookback_ms
        self._limits = limits or QueryLimits()
        self._read = 0
        self._held = 0
        self._deadline = 0.0
        self._start_ms = 0
        self._end_ms = 0

    # --- the API's operations -------------------------------------------------------------

    def instant(self, expr: str, at_s: float) -> Result:
        tree = parse(expr)
        at = round(at_s * 1000)
        return self._run(tree, np.array([at], dtype=np.int64))

    def range(self, expr: str, start_s: float, end_s: float, step_s: float) -> Result:
        tree = parse(expr)
        start, end, step = round(start_s * 1000), round(end_s * 1000), round(step_s * 1000)
        if end < start:
            raise InvalidArgument("invalid parameter 'end': end timestamp must not be before start time")
        if step <= 0:
            raise InvalidArgument(
                "invalid parameter 'step': zero or negative query resolution step widths are not accepted"
            )
        if (end - start) // step + 1 > MAX_STEPS:
            raise InvalidArgument(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query "
                "resolution (?step=XX)"
            )
        result = self._run(tree, np.arange(start, end + 1, step, dtype=np.int64))
        if isinstance(result.value, Matrix | Text):
            raise InvalidArgument(
                f"invalid parameter 'query': invalid expression type \"{kind(result.value).replace('instant ', '')}\" "
                "for range query, must be Scalar or instant Vector"
            )
        return result

    def _run(self, tree: Any, steps: np.ndarray) -> Result:
        self._start_ms, self._end_ms = int(steps[0]), int(steps[-1])
        self._deadline = time.monotonic() + self._limits.timeout_s
        try:
            return Result(self.eval(tree, steps), steps)
        except RecursionError:
            raise InvalidArgument("invalid parameter 'query': the expression nests too deeply") from None

    # --- the walk ----------------------------------------------------------------------------

    def check(self) -> None:
        """Stops the query past its deadline or when its client is gone (called between nodes and
        inside long loops)."""
        if time.monotonic() > self._deadline:
            raise QueryTimeout("query timed out in expression evaluation")
        if self._limits.cancelled():
            raise QueryCancelled("query was canceled: the client went away")

    def hold(self, rows: int, steps: int) -> None:
        """Counts values about to be held; past the budget the query stops before allocating."""
        self._held += rows * steps
        if self._held > self._limits.max_points:
            raise ResourceExhausted(
                "query processing would load too many samples into memory in query execution "
                f"(more than {self._limits.max_points} series x steps, INFRAWATCH_PROMQL_MAX_POINTS)"
            )

    def eval(self, node: Any, steps: np.ndarray) -> Value:
        self.check()
        value = self._dispatch(node, steps)
        if isinstance(value, Vector) and not isinstance(node, ast.VectorSelector | ast.ParenExpr):
            # Derived values count too. Selectors hold before they allocate; a derived value is
            # no larger than the inputs it came from, which were held already, so the budget is
            # overrun by at most one such value before the query stops (count_values, which can
            # outgrow its input, holds each new row before allocating it).
            self.hold(len(value.labels), len(steps))
        return value

    def _dispatch(self, node: Any, steps: np.ndarray) -> Value:
        if isinstance(node, ast.NumberLiteral):
            return Scalar(np.full(len(steps), float(node.val)))
        if isinstance(node, ast.StringLiteral):
            return Text(node.val)
        if isinstance(node, ast.ParenExpr):
            return self.eval(node.expr, steps)
        if isinstance(node, ast.VectorSelector):
            return self._instant_selector(node, steps)
        if isinstance(node, ast.MatrixSelector):
            return self._range_selector(node, steps)
        if isinstance(node, ast.SubqueryExpr):
            return self._subquery(node, steps)
        if isinstance(node, ast.UnaryExpr):
            return operators.negate(self.eval(node.expr, steps))
        if isinstance(node, ast.BinaryExpr):
            return operators.binary(self, node, steps)
        if isinstance(node, ast.AggregateExpr):
            return aggregations.aggregate(self, node, steps)
        if isinstance(node, ast.Call):
            return functions.call(self, node, steps)
        raise Unsupported(f"unsupported in InfraWatch's PromQL: {type(node).__name__}")

    def vector(self, node: Any, steps: np.ndarray, what: str) -> Vector:
        value = self.eval(node, steps)
        if not isinstance(value, Vector):
            raise InvalidArgument(f"{what} expects an instant vector, got {kind(value)}")
        return value

    def scalar(self, node: Any, steps: np.ndarray, what: str) -> Scalar:
        value = self.eval(node, steps)
        if not isinstance(value, Scalar):
            raise InvalidArgument(f"{what} expects a scalar, got {kind(value)}")
        return value

    def matrix(self, node: Any, steps: np.ndarray, what: str) -> Matrix:
        value = self.eval(node, steps)
        if not isinstance(value, Matrix):
            raise InvalidArgument(f"{what} expects a range vector, got {kind(value)}")
        return value

    # --- time modifiers ----------------------------------------------------------------------

    def _evaluation_times(self, at: Any, offset: Any, steps: np.ndarray) -> np.ndarray:
        """The times a selector or subquery is evaluated at: each step, or the `@` time, shifted
        back by the offset."""
        if at is not None:
            kind_name = str(at.type)
            if kind_name.endswith("Start"):
                fixed = self._start_ms
            elif kind_name.endswith("End"):
                fixed = self._end_ms
            else:
                fixed = round(at.at.timestamp() * 1000)
            steps = np.full(len(steps), fixed, dtype=np.int64)
        return steps - _ms(offset)

    # --- selection ---------------------------------------------------------------------------

    def matchers(self, selector: Any) -> list[Matcher]:
        if selector.matchers.or_matchers:
            raise Unsupported("unsupported in PromQL: 'or' inside a selector's braces")
        matchers = [Matcher(METRIC_NAME, MatchType.EQUAL, selector.name)] if selector.name else []
        for matcher in selector.matchers.matchers:
            matchers.append(Matcher(matcher.name, _MATCH_TYPES[str(matcher.op)], matcher.value))
        if all(m.matches("") for m in matchers):
            raise InvalidArgument("vector selector must contain at least one non-empty matcher")
        return matchers

    def select(self, selector: Any) -> list[Series]:
        return select_series(self._ctx, self.matchers(selector))

    def _samples(
        self, selector: Any, ends: np.ndarray, window_ms: int
    ) -> tuple[list[LabelSet], np.ndarray, np.ndarray, np.ndarray]:
        """The selector's series with samples in (min end - window, max end], in label order:
        their labels, their samples end to end (times, values) and where each series starts.
        With a selection cache, instant queries at one instant share what they read."""
        matchers = self.matchers(selector)
        lowest = int(ends.min()) - window_ms + 1
        highest = int(ends.max())
        found: Samples | None = None
        if self._cache is not None and len(ends) == 1:
            try:
                found = self._cache.samples(
                    tuple(matchers), lowest, highest, lambda wide: self._read_samples(matchers, wide, highest)
                )
            except ResourceExhausted:
                found = None  # the wider read is over the budget; read just what this query needs
        if found is None:
            found = self._read_samples(matchers, lowest, highest)
        if self._read + len(found[1]) > self._limits.max_samples:
            raise self._too_many_samples()
        self._read += len(found[1])
        return found

    def _too_many_samples(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"the query would read more than {self._limits.max_samples} samples (INFRAWATCH_PROMQL_MAX_SAMPLES); "
            "narrow the range or the selector"
        )

    def _read_samples(self, matchers: list[Matcher], lowest: int, highest: int) -> Samples:
        chosen = sorted(select_series(self._ctx, matchers), key=lambda series: series.labels)
        budget = self._limits.max_samples - self._read
        try:
            found = self._ctx.store.raw_samples([s.series_id for s in chosen], lowest, highest, refuse_above=budget)
        except TooManyPoints:
            raise self._too_many_samples() from None
        # Samples come series after series in id order: reorder the series' runs into label order.
        cuts = np.flatnonzero(found.series[1:] != found.series[:-1]) + 1
        bounds = [0, *cuts.tolist(), len(found.t)]
        by_id = {int(found.series[lo]): (lo, hi) for lo, hi in pairwise(bounds) if hi > lo}
        labels, spans = [], []
        for series in chosen:
            span = by_id.get(series.series_id)
            if span is not None:
                labels.append(series.labels)
                spans.append(span)
        offsets = np.zeros(len(spans) + 1, dtype=np.int64)
        np.cumsum([hi - lo for lo, hi in spans], out=offsets[1:])
        in_place = all(a[1] == b[0] for a, b in pairwise(spans)) and (not spans or spans[0][0] == 0)
        if not in_place:
            order = np.concatenate([np.arange(lo, hi) for lo, hi in spans])
            return labels, found.t[order], found.v[order], offsets
        return labels, found.t[: offsets[-1]], found.v[: offsets[-1]], offsets

    def _instant_selector(self, selector: Any, steps: np.ndarray) -> Vector:
        ends = self._evaluation_times(selector.at, selector.offset, steps)
        labels, times, values, offsets = self._samples(selector, ends, self._lookback_ms)
        if not labels:
            return Vector.empty(len(steps))
        self.hold(len(labels), len(steps))
        newest = search_series(times, offsets, ends) - 1  # (series x steps): the newest sample at or before
        inside = newest >= offsets[:-1, None]
        at = np.maximum(newest, 0)
        found = inside & (times[at] > ends[None, :] - self._lookback_ms)
        found &= values[at].view(np.uint64) != STALE_NAN_BITS
        return Vector(labels, np.where(found, values[at], np.nan), found, sample_times=times[at])

    def _range_selector(self, node: Any, steps: np.ndarray) -> Matrix:
        selector = node.vector_selector
        range_ms = _ms(node.range)
        ends = self._evaluation_times(selector.at, selector.offset, steps)
        labels, times, values, offsets = self._samples(selector, ends, range_ms)
        fresh = values.view(np.uint64) != STALE_NAN_BITS
        if not fresh.all():
            kept = np.zeros(len(offsets), dtype=np.int64)
            np.cumsum(np.add.reduceat(fresh.astype(np.int64), offsets[:-1]), out=kept[1:])
            times, values, offsets = times[fresh], values[fresh], kept
        return Matrix.from_flat(labels, times, values, offsets, range_ms, ends)

    def _subquery(self, node: Any, steps: np.ndarray) -> Matrix:
        ends = self._evaluation_times(node.at, node.offset, steps)
        range_ms = _ms(node.range)
        step_ms = _ms(node.step) or DEFAULT_SUBQUERY_STEP_MS
        earliest = int(ends.min()) - range_ms
        first = -(-earliest // step_ms) * step_ms  # the first multiple of the step at or after it
        inner = np.arange(first, int(ends.max()) + 1, step_ms, dtype=np.int64)
        if len(inner) > MAX_STEPS * 10:
            raise ResourceExhausted(
                f"the subquery would be evaluated at {len(inner)} steps (at most {MAX_STEPS * 10}); "
                "raise its step or shorten its range"
            )
        if not len(inner):
            return Matrix([], [], [], range_ms, ends, from_selector=False)
        value = self.eval(node.expr, inner)
        if isinstance(value, Scalar):
            raise InvalidArgument("subquery is only allowed on instant vector, got scalar")
        if not isinstance(value, Vector):
            raise InvalidArgument(f"subquery is only allowed on instant vector, got {kind(value)}")
        times = [inner[value.present[i]] for i in range(len(value.labels))]
        values = [value.values[i][value.present[i]] for i in range(len(value.labels))]
        return Matrix(list(value.labels), times, values, range_ms, ends, from_selector=False)

    # --- listings' selection -------------------------------------------------------------------

    def selected(self, selectors: Sequence[str]) -> list[Series]:
        """Every series one of these selector texts matches (for /api/v1/series and friends)."""
        found: dict[int, Series] = {}
        for text in selectors:
            tree = parse(text)
            if not isinstance(tree, ast.VectorSelector):
                raise InvalidArgument(f"invalid parameter 'match[]': {text[:80]!r} is not a series selector")
            for series in self.select(tree):
                found[series.series_id] = series
        return list(found.values())


def _ms(delta: Any) -> int:
    return 0 if delta is None else round(delta.total_seconds() * 1000)
