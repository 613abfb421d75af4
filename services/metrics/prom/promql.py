"""A PromQL subset with PromQL's own semantics, evaluated on numpy over every step at once.

Parsing is done by `promql-parser` (the Rust parser GreptimeDB uses, with Python bindings); this
module walks its syntax tree. Every value is evaluated for all steps of the query at once: an
instant vector is an (series x steps) array of values and a mask of where a sample exists, a
scalar one value per step, and a range vector the raw samples of its series, cut into one
window per step with `searchsorted`.

Supported: number literals; instant and range selectors with all four matchers and `offset`;
`rate`, `irate`, `increase`, `delta`, `idelta`, `{avg,sum,min,max,count,last,present,stddev,
stdvar,quantile}_over_time`; `sum`, `avg`, `min`, `max`, `count`, `topk`, `bottomk` with `by` /
`without`; `+ - * / % ^` and `== != > < >= <=` (with `bool`) between scalars, vectors and
scalars, and vectors with one-to-one matching (`on` / `ignoring`); unary minus; `abs`, `ceil`,
`floor`, `exp`, `sqrt`, `ln`, `log2`, `log10`, `time()`, `vector()`, `scalar()`. Anything else is
refused with a `bad_data` error that names the construct.

Semantics that matter for identical answers (Prometheus 3's):
- an instant selector takes a series' newest sample in (t - lookback, t]; a stale marker there
  means no value;
- a range selector `[r]` takes the samples in (t - r, t], stale markers dropped;
- `rate`/`increase`/`delta` extrapolate to the window's edges like Prometheus' extrapolatedRate
  (at most half an average sample interval beyond the first/last sample, or up to the window
  edge when the sample lies within 1.1 intervals of it; a counter is not extrapolated below
  zero), counting a decrease as a counter reset;
- aggregations and functions other than `last_over_time` drop the metric name, as arithmetic
  does; comparisons without `bool` filter and keep it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import numpy as np
import promql_parser as ast

from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.selectors import METRIC_NAME, Matcher, MatchType
from services.metrics.domain import LabelSet, Series
from services.metrics.query.use_cases import QueryContext, select_series
from services.metrics.storage.ports import TooManyPoints

MAX_STEPS = 11_000
STALE_NAN_BITS = 0x7FF0000000000002
"""Prometheus' staleness marker: a NaN with this exact bit pattern."""

_MATCH_TYPES = {
    "MatchOp.Equal": MatchType.EQUAL,
    "MatchOp.NotEqual": MatchType.NOT_EQUAL,
    "MatchOp.Re": MatchType.REGEX,
    "MatchOp.NotRe": MatchType.NOT_REGEX,
}
"""The parser's matcher operators (not hashable themselves) by their names."""


@dataclass(frozen=True)
class Window:
    """The time range a listing (series, labels, label values) is narrowed to, in milliseconds."""

    start_ms: int
    end_ms: int


ALL_TIME = Window(-(2**62), 2**62)


def _rfc3339(at_ms: int) -> str:
    if not at_ms:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_query(expr: str) -> str:
    """The expression as Prometheus' /api/v1/format_query gives it: parsed and printed back."""
    return str(parse(expr).prettify())


class Unsupported(InvalidArgument):
    """A valid PromQL construct outside the supported subset."""


@dataclass
class Scalar:
    values: np.ndarray  # one per step


@dataclass
class Vector:
    labels: list[LabelSet]
    values: np.ndarray  # (series, steps)
    present: np.ndarray  # (series, steps) bool

    @classmethod
    def empty(cls, steps: int) -> Vector:
        return cls([], np.zeros((0, steps)), np.zeros((0, steps), dtype=bool))


@dataclass
class RangeVector:
    labels: list[LabelSet]
    times: list[np.ndarray]  # per series, ascending ms, stale markers removed
    values: list[np.ndarray]
    range_ms: int
    offset_ms: int


@dataclass
class Text:
    value: str


Value = Scalar | Vector | RangeVector | Text


def parse_duration(raw: str, name: str = "duration") -> float:
    try:
        return ast.parse_duration(raw).total_seconds()
    except ValueError:
        raise InvalidArgument(f"invalid parameter {name!r}: cannot parse {raw[:80]!r} to a valid duration") from None


def parse(expr: str) -> Any:
    try:
        return ast.parse(expr)
    except ValueError as exc:
        raise InvalidArgument(f"invalid parameter 'query': {exc}") from None


def _ms(delta: timedelta | None) -> int:
    return 0 if delta is None else round(delta.total_seconds() * 1000)


def _without_name(labels: LabelSet) -> LabelSet:
    return tuple(pair for pair in labels if pair[0] != METRIC_NAME)


def format_value(value: float) -> str:
    """A sample value as Prometheus' API writes it: the shortest digits that read back exactly, in
    exponent form below 1e-6 and from 1e21 on, plain decimals otherwise; NaN, +Inf, -Inf."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        return text
    if "e" in text:
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


class Engine:
    """Evaluates one query; built per request (it holds the query's steps)."""

    def __init__(self, ctx: QueryContext, lookback_ms: int, max_samples: int = 20_000_000) -> None:
        self._ctx = ctx
        self._lookback_ms = lookback_ms
        self._max_samples = max_samples
        self._steps = np.zeros(1, dtype=np.int64)
        self._read = 0

    # --- the API's operations -------------------------------------------------------------

    def instant(self, expr: str, at_s: float) -> dict[str, Any]:
        tree = parse(expr)
        self._steps = np.array([round(at_s * 1000)], dtype=np.int64)
        result = self._evaluate(tree)
        at = self._steps[0] / 1000
        if isinstance(result, Scalar):
            return {"resultType": "scalar", "result": [at, format_value(float(result.values[0]))]}
        if isinstance(result, Text):
            return {"resultType": "string", "result": [at, result.value]}
        if isinstance(result, RangeVector):
            return {"resultType": "matrix", "result": self._raw_matrix(result)}
        return {
            "resultType": "vector",
            "result": [
                {"metric": dict(labels), "value": [at, format_value(float(result.values[i, 0]))]}
                for i, labels in enumerate(result.labels)
                if result.present[i, 0]
            ],
        }

    def range(self, expr: str, start_s: float, end_s: float, step_s: float) -> dict[str, Any]:
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
        self._steps = np.arange(start, end + 1, step, dtype=np.int64)
        result = self._evaluate(tree)
        if isinstance(result, RangeVector | Text):
            raise InvalidArgument(
                f"invalid expression type {'range vector' if isinstance(result, RangeVector) else 'string'} "
                "for range query, must be Scalar or instant Vector"
            )
        seconds = (self._steps / 1000).tolist()
        if isinstance(result, Scalar):
            values = [[t, format_value(v)] for t, v in zip(seconds, result.values.tolist(), strict=True)]
            return {"resultType": "matrix", "result": [{"metric": {}, "values": values}]}
        series = []
        for i in sorted(range(len(result.labels)), key=lambda i: result.labels[i]):
            where = np.flatnonzero(result.present[i]).tolist()
            if where:
                row = result.values[i].tolist()
                series.append(
                    {"metric": dict(result.labels[i]), "values": [[seconds[j], format_value(row[j])] for j in where]}
                )
        return {"resultType": "matrix", "result": series}

    def series(self, selectors: Sequence[str], window: Window | None = None) -> list[LabelSet]:
        """The label sets the selectors match (every series without selectors); with a window,
        only those with data in it."""
        if selectors:
            found: dict[int, Series] = {}
            for selector in selectors:
                for series in self._select(self._selector_of(selector)):
                    found[series.series_id] = series
            chosen = list(found.values())
        else:
            self._ctx.catalog.refresh()
            chosen = self._ctx.catalog.select([])
        if window is not None:
            inside = self._ctx.store.series_with_samples([s.series_id for s in chosen], window.start_ms, window.end_ms)
            chosen = [series for series in chosen if series.series_id in inside]
        return sorted(series.labels for series in chosen)

    def label_names(self, selectors: Sequence[str], window: Window | None = None) -> list[str]:
        if not selectors and window is None:
            self._ctx.catalog.refresh()
            return self._ctx.catalog.label_names()
        return sorted({name for labels in self.series(selectors, window) for name, _ in labels})

    def label_values(self, name: str, selectors: Sequence[str], window: Window | None = None) -> list[str]:
        if not selectors and window is None:
            self._ctx.catalog.refresh()
            return self._ctx.catalog.label_values(name)
        return sorted({value for labels in self.series(selectors, window) for label, value in labels if label == name})

    def metadata(self, metric: str = "", limit: int = 0, limit_per_metric: int = 0) -> dict[str, list[dict[str, str]]]:
        """Metric families' metadata as Prometheus answers /api/v1/metadata: by family name, the
        type as declared (counter, gauge, histogram, summary, ...), help and unit."""
        self._ctx.catalog.refresh()
        answer: dict[str, list[dict[str, str]]] = {}
        for family in self._ctx.catalog.families():
            if metric and family.name != metric:
                continue
            if limit and len(answer) >= limit:
                break
            entries = [{"type": family.type, "help": family.help, "unit": family.unit}]
            answer[family.name] = entries[:limit_per_metric] if limit_per_metric else entries
        return answer

    def tsdb_status(self, top: int = 10) -> dict[str, Any]:
        """Head-style cardinality statistics (Prometheus' /api/v1/status/tsdb): the page an SRE
        opens when cardinality explodes."""
        self._ctx.catalog.refresh()
        stats = self._ctx.catalog.cardinality()

        def ranked(counts: dict[Any, int], name: Callable[[Any], str]) -> list[dict[str, Any]]:
            best = sorted(counts.items(), key=lambda item: (-item[1], name(item[0])))[:top]
            return [{"name": name(key), "value": value} for key, value in best]

        return {
            "headStats": {
                "numSeries": stats.series,
                "numLabelPairs": len(stats.series_by_pair),
                "chunkCount": 0,
                "minTime": 0,
                "maxTime": 0,
            },
            "seriesCountByMetricName": ranked(stats.series_by_metric, str),
            "labelValueCountByLabelName": ranked(stats.values_by_label, str),
            "memoryInBytesByLabelName": ranked(stats.bytes_by_label, str),
            "seriesCountByLabelValuePair": ranked(stats.series_by_pair, lambda pair: f"{pair[0]}={pair[1]}"),
        }

    def targets(self) -> dict[str, Any]:
        """What InfraWatch agents scrape, from the `up` and `scrape_duration_seconds` series they
        write for each target (the error text stays in the agent's log)."""
        self._ctx.catalog.refresh()
        ups = [s for s in self._ctx.catalog.select([Matcher(METRIC_NAME, MatchType.EQUAL, "up")]) if not s.by_writer]
        durations = {
            tuple(p for p in s.labels if p[0] != METRIC_NAME): s.series_id
            for s in self._ctx.catalog.select([Matcher(METRIC_NAME, MatchType.EQUAL, "scrape_duration_seconds")])
            if not s.by_writer
        }
        wanted = [s.series_id for s in ups] + list(durations.values())
        latest = self._ctx.store.latest(wanted)
        active: list[dict[str, Any]] = []
        for series in ups:
            labels = dict(series.labels)
            labels.pop(METRIC_NAME, None)
            at, value = latest.get(series.series_id, (0, math.nan))
            duration = latest.get(durations.get(tuple(p for p in series.labels if p[0] != METRIC_NAME), -1), (0, 0.0))
            healthy = value == 1.0
            failed = f"the last scrape failed (its error is in the log of the InfraWatch agent on {labels.get('host')})"
            active.append(
                {
                    "discoveredLabels": labels,
                    "labels": labels,
                    "scrapePool": labels.get("job", ""),
                    "scrapeUrl": labels.get("instance", ""),
                    "globalUrl": labels.get("instance", ""),
                    "lastError": "" if healthy else failed,
                    "lastScrape": _rfc3339(at),
                    "lastScrapeDuration": duration[1],
                    "health": "up" if healthy else ("down" if at else "unknown"),
                    "scrapeInterval": "",
                    "scrapeTimeout": "",
                }
            )
        active.sort(key=lambda target: (target["scrapePool"], target["scrapeUrl"], target["labels"].get("host", "")))
        return {"activeTargets": active, "droppedTargets": []}

    # --- selection ---------------------------------------------------------------------------

    def _selector_of(self, text: str) -> Any:
        tree = parse(text)
        if not isinstance(tree, ast.VectorSelector):
            raise InvalidArgument(f"invalid parameter 'match[]': {text[:80]!r} is not a series selector")
        return tree

    def _matchers(self, selector: Any) -> list[Matcher]:
        if selector.matchers.or_matchers:
            raise Unsupported("unsupported in InfraWatch's PromQL: 'or' inside a selector's braces")
        matchers = [Matcher(METRIC_NAME, MatchType.EQUAL, selector.name)] if selector.name else []
        for matcher in selector.matchers.matchers:
            matchers.append(Matcher(matcher.name, _MATCH_TYPES[str(matcher.op)], matcher.value))
        if all(m.matches("") for m in matchers):
            raise InvalidArgument("vector selector must contain at least one non-empty matcher")
        return matchers

    def _select(self, selector: Any) -> list[Series]:
        return select_series(self._ctx, self._matchers(selector))

    def _samples(self, selector: Any, window_ms: int) -> tuple[list[LabelSet], list[np.ndarray], list[np.ndarray]]:
        """The selector's series with their samples in (first step - offset - window, last step - offset]."""
        if selector.at is not None:
            raise Unsupported("unsupported in InfraWatch's PromQL: the @ modifier")
        offset = _ms(selector.offset)
        chosen = self._select(selector)
        lowest = int(self._steps[0]) - offset - window_ms + 1
        highest = int(self._steps[-1]) - offset
        budget = self._max_samples - self._read
        try:
            found = self._ctx.store.raw_samples([s.series_id for s in chosen], lowest, highest, refuse_above=budget)
        except TooManyPoints:
            found = None
        if found is None or self._read + len(found.t) > self._max_samples:
            raise ResourceExhausted(
                f"the query would read more than {self._max_samples} samples (INFRAWATCH_PROMQL_MAX_SAMPLES); "
                "narrow the range or the selector"
            )
        self._read += len(found.t)
        # Samples come series after series: cut them into one array pair per series.
        cuts = np.flatnonzero(found.series[1:] != found.series[:-1]) + 1
        bounds = [0, *cuts.tolist(), len(found.t)]
        by_id = {int(found.series[lo]): (lo, hi) for lo, hi in pairwise(bounds) if hi > lo}
        labels, times, values = [], [], []
        for series in chosen:
            span = by_id.get(series.series_id)
            if span is None:
                continue
            labels.append(series.labels)
            times.append(found.t[span[0] : span[1]])
            values.append(found.v[span[0] : span[1]])
        return labels, times, values

    def _instant_selector(self, selector: Any) -> Vector:
        labels, times, values = self._samples(selector, self._lookback_ms)
        steps = self._steps - _ms(selector.offset)
        rows, masks = [], []
        for ts, vs in zip(times, values, strict=True):
            index = np.searchsorted(ts, steps, side="right") - 1
            clipped = np.maximum(index, 0)
            found = (index >= 0) & (ts[clipped] > steps - self._lookback_ms)
            found &= vs[clipped].view(np.uint64) != STALE_NAN_BITS
            rows.append(np.where(found, vs[clipped], np.nan))
            masks.append(found)
        if not rows:
            return Vector.empty(len(self._steps))
        return Vector(labels, np.array(rows), np.array(masks))

    def _range_selector(self, node: Any) -> RangeVector:
        selector = node.vector_selector
        range_ms = _ms(node.range)
        labels, times, values = self._samples(selector, range_ms)
        kept_times, kept_values = [], []
        for ts, vs in zip(times, values, strict=True):
            fresh = vs.view(np.uint64) != STALE_NAN_BITS
            kept_times.append(ts[fresh])
            kept_values.append(vs[fresh])
        return RangeVector(labels, kept_times, kept_values, range_ms, _ms(selector.offset))

    # --- evaluation ----------------------------------------------------------------------------

    def _evaluate(self, tree: Any) -> Value:
        try:
            return self._eval(tree)
        except RecursionError:
            raise InvalidArgument("invalid parameter 'query': the expression nests too deeply") from None

    def _eval(self, node: Any) -> Value:
        if isinstance(node, ast.NumberLiteral):
            return Scalar(np.full(len(self._steps), float(node.val)))
        if isinstance(node, ast.StringLiteral):
            return Text(node.val)
        if isinstance(node, ast.ParenExpr):
            return self._eval(node.expr)
        if isinstance(node, ast.VectorSelector):
            return self._instant_selector(node)
        if isinstance(node, ast.MatrixSelector):
            return self._range_selector(node)
        if isinstance(node, ast.UnaryExpr):
            operand = self._eval(node.expr)
            if isinstance(operand, Scalar):
                return Scalar(-operand.values)
            if isinstance(operand, Vector):
                return Vector([_without_name(lb) for lb in operand.labels], -operand.values, operand.present)
            raise InvalidArgument("unary minus applies to scalars and instant vectors only")
        if isinstance(node, ast.BinaryExpr):
            return self._binary(node)
        if isinstance(node, ast.AggregateExpr):
            return self._aggregate(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.SubqueryExpr):
            raise Unsupported("unsupported in InfraWatch's PromQL: subqueries")
        raise Unsupported(f"unsupported in InfraWatch's PromQL: {type(node).__name__}")

    def _vector(self, node: Any, what: str) -> Vector:
        value = self._eval(node)
        if not isinstance(value, Vector):
            raise InvalidArgument(f"{what} expects an instant vector, got {_kind(value)}")
        return value

    def _scalar(self, node: Any, what: str) -> Scalar:
        value = self._eval(node)
        if not isinstance(value, Scalar):
            raise InvalidArgument(f"{what} expects a scalar, got {_kind(value)}")
        return value

    # --- functions -----------------------------------------------------------------------------

    def _call(self, node: Any) -> Value:
        name = node.func.name
        args = node.args
        if name in _RANGE_FUNCTIONS:
            parameter = None
            if name == "quantile_over_time":
                parameter = self._scalar(args[0], name)
                args = args[1:]
            matrix = self._eval(args[0])
            if not isinstance(matrix, RangeVector):
                raise InvalidArgument(f"{name} expects a range vector, got {_kind(matrix)}")
            return self._over_windows(name, matrix, parameter)
        if name in _MATH:
            vector = self._vector(args[0], name)
            with np.errstate(all="ignore"):
                values = _MATH[name](vector.values)
            return Vector([_without_name(lb) for lb in vector.labels], values, vector.present)
        if name == "time":
            return Scalar(self._steps / 1000)
        if name == "vector":
            scalar = self._scalar(args[0], name)
            return Vector([()], scalar.values[None, :].copy(), np.ones((1, len(self._steps)), dtype=bool))
        if name == "scalar":
            vector = self._vector(args[0], name)
            single = vector.present.sum(axis=0) == 1
            picked = np.where(vector.present, vector.values, 0).sum(axis=0) if len(vector.labels) else 0
            return Scalar(np.where(single, picked, np.nan))
        raise Unsupported(f"unsupported in InfraWatch's PromQL: function {name}()")

    def _over_windows(self, name: str, matrix: RangeVector, parameter: Scalar | None) -> Vector:
        steps = self._steps - matrix.offset_ms
        count = len(steps)
        rows, masks = [], []
        compute = _RANGE_FUNCTIONS[name]
        for ts, vs in zip(matrix.times, matrix.values, strict=True):
            lo = np.searchsorted(ts, steps - matrix.range_ms, side="right")
            hi = np.searchsorted(ts, steps, side="right")
            window = _Windows(ts, vs, lo, hi, steps, matrix.range_ms)
            values, present = compute(window, parameter)
            rows.append(values)
            masks.append(present)
        if not rows:
            return Vector.empty(count)
        labels = matrix.labels if name == "last_over_time" else [_without_name(lb) for lb in matrix.labels]
        return Vector(labels, np.array(rows, dtype=np.float64), np.array(masks, dtype=bool))

    # --- aggregation ---------------------------------------------------------------------------

    def _aggregate(self, node: Any) -> Vector:
        op = str(node.op)
        if op not in ("sum", "avg", "min", "max", "count", "topk", "bottomk"):
            raise Unsupported(f"unsupported in InfraWatch's PromQL: aggregation {op}")
        vector = self._vector(node.expr, op)
        modifier = node.modifier
        if modifier is None:
            key: Callable[[LabelSet], LabelSet] = lambda labels: ()  # noqa: E731
        elif modifier.type == ast.AggModifierType.By:
            wanted = set(modifier.labels)
            key = lambda labels: tuple(pair for pair in labels if pair[0] in wanted)  # noqa: E731
        else:
            unwanted = {*modifier.labels, METRIC_NAME}
            key = lambda labels: tuple(pair for pair in labels if pair[0] not in unwanted)  # noqa: E731
        groups: dict[LabelSet, list[int]] = {}
        for index, labels in enumerate(vector.labels):
            groups.setdefault(key(labels), []).append(index)
        if op in ("topk", "bottomk"):
            k = self._scalar(node.param, op).values
            return _top(vector, list(groups.values()), k, largest=op == "topk")
        out_labels, out_values, out_present = [], [], []
        for labels, members in groups.items():
            values, present = vector.values[members], vector.present[members]
            counted = present.sum(axis=0)
            with np.errstate(all="ignore"):
                total = np.sum(values, axis=0, where=present)
                if op == "sum":
                    result = total
                elif op == "count":
                    result = counted.astype(np.float64)
                elif op == "avg":
                    result = total / counted
                else:
                    result = _extreme(values, present, counted, op == "max")
            out_labels.append(labels)
            out_values.append(result)
            out_present.append(counted > 0)
        if not out_labels:
            return Vector.empty(len(self._steps))
        return Vector(out_labels, np.array(out_values), np.array(out_present))

    # --- binary operators ----------------------------------------------------------------------

    def _binary(self, node: Any) -> Value:
        op = str(node.op)
        if op in ("and", "or", "unless"):
            raise Unsupported(f"unsupported in InfraWatch's PromQL: the set operator {op}")
        if op not in _ARITHMETIC and op not in _COMPARISON:
            raise Unsupported(f"unsupported in InfraWatch's PromQL: the operator {op}")
        modifier = node.modifier
        return_bool = bool(modifier and modifier.return_bool)
        lhs, rhs = self._eval(node.lhs), self._eval(node.rhs)
        for side in (lhs, rhs):
            if not isinstance(side, Scalar | Vector):
                raise InvalidArgument(
                    f"binary expression must contain only scalar and instant vector types, got {_kind(side)}"
                )
        if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
            if op in _COMPARISON and not return_bool:
                raise InvalidArgument("comparisons between scalars must use BOOL modifier")
            with np.errstate(all="ignore"):
                return Scalar(_apply(op, lhs.values, rhs.values, return_bool))
        if isinstance(lhs, Vector) and isinstance(rhs, Vector):
            return self._vector_vector(op, lhs, rhs, modifier, return_bool)
        if isinstance(lhs, Vector) and isinstance(rhs, Scalar):
            vector, left, right = lhs, lhs.values, rhs.values[None, :]
        elif isinstance(lhs, Scalar) and isinstance(rhs, Vector):
            vector, left, right = rhs, lhs.values[None, :], rhs.values
        else:
            raise InvalidArgument("binary expression must contain only scalar and instant vector types")
        with np.errstate(all="ignore"):
            results = _apply(op, left, right, return_bool)
        if op in _COMPARISON and not return_bool:
            # A filter: the vector's own values where the comparison holds, its labels kept.
            return Vector(vector.labels, vector.values, vector.present & (results == 1.0))
        return Vector([_without_name(lb) for lb in vector.labels], results, vector.present.copy())

    def _vector_vector(self, op: str, lhs: Vector, rhs: Vector, modifier: Any, return_bool: bool) -> Vector:
        if modifier is not None and modifier.card != ast.VectorMatchCardinality.OneToOne:
            raise Unsupported("unsupported in InfraWatch's PromQL: group_left / group_right (many-to-one matching)")
        matching = modifier.matching if modifier is not None else None
        on = matching is not None and matching.type == ast.LabelModifierType.Include
        named = set(matching.labels) if matching is not None else set()

        def signature(labels: LabelSet) -> LabelSet:
            if on:
                return tuple(pair for pair in labels if pair[0] in named)
            return tuple(pair for pair in labels if pair[0] not in named and pair[0] != METRIC_NAME)

        right: dict[LabelSet, list[int]] = {}
        for index, labels in enumerate(rhs.labels):
            right.setdefault(signature(labels), []).append(index)
        for members in right.values():
            if len(members) > 1 and np.any(rhs.present[members].sum(axis=0) > 1):
                raise InvalidArgument(
                    "found duplicate series for the match group on the right hand-side of the operation: "
                    "many-to-many matching not allowed: matching labels must be unique on one side"
                )
        out_labels, out_values, out_present = [], [], []
        taken: dict[LabelSet, np.ndarray] = {}
        keeps_name = op in _COMPARISON and not return_bool
        for index, labels in enumerate(lhs.labels):
            sig = signature(labels)
            members = right.get(sig, [])
            if not members:
                continue
            present = rhs.present[members]
            other = np.where(present, rhs.values[members], 0).sum(axis=0)
            both = lhs.present[index] & present.any(axis=0)
            if not both.any():
                continue
            seen = taken.get(sig)
            if seen is not None and np.any(seen & both):
                raise InvalidArgument(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                )
            taken[sig] = both if seen is None else seen | both
            with np.errstate(all="ignore"):
                results = _apply(op, lhs.values[index], other, return_bool)
            if keeps_name:
                values, present_out = lhs.values[index], both & (results == 1.0)
            else:
                values, present_out = results, both
            result_labels = labels if keeps_name else _without_name(labels)
            if on:
                result_labels = tuple(pair for pair in result_labels if pair[0] in named)
            elif named:
                result_labels = tuple(pair for pair in result_labels if pair[0] not in named)
            out_labels.append(result_labels)
            out_values.append(values)
            out_present.append(present_out)
        if not out_labels:
            return Vector.empty(len(self._steps))
        return Vector(out_labels, np.array(out_values), np.array(out_present))

    def _raw_matrix(self, matrix: RangeVector) -> list[dict[str, Any]]:
        step = int(self._steps[0]) - matrix.offset_ms
        series = []
        for labels, ts, vs in zip(matrix.labels, matrix.times, matrix.values, strict=True):
            inside = (ts > step - matrix.range_ms) & (ts <= step)
            if inside.any():
                series.append(
                    {
                        "metric": dict(labels),
                        "values": [
                            [t / 1000, format_value(v)]
                            for t, v in zip(ts[inside].tolist(), vs[inside].tolist(), strict=True)
                        ],
                    }
                )
        return series


def _kind(value: Value) -> str:
    return {Scalar: "scalar", Vector: "instant vector", RangeVector: "range vector", Text: "string"}[type(value)]


_ARITHMETIC: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.true_divide,
    "%": np.fmod,
    "^": np.power,
}
_COMPARISON: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "==": np.equal,
    "!=": np.not_equal,
    ">": np.greater,
    "<": np.less,
    ">=": np.greater_equal,
    "<=": np.less_equal,
}


def _apply(op: str, left: np.ndarray, right: np.ndarray, return_bool: bool) -> np.ndarray:
    if op in _ARITHMETIC:
        return _ARITHMETIC[op](np.asarray(left, dtype=np.float64), np.asarray(right, dtype=np.float64))
    return _COMPARISON[op](left, right).astype(np.float64)


def _extreme(values: np.ndarray, present: np.ndarray, counted: np.ndarray, largest: bool) -> np.ndarray:
    """min/max of the present values per step; NaN only when every present value is NaN (a number
    always wins over NaN, as in Prometheus)."""
    fill = -np.inf if largest else np.inf
    masked = np.where(present & ~np.isnan(values), values, fill)
    result = masked.max(axis=0) if largest else masked.min(axis=0)
    numbers = (present & ~np.isnan(values)).sum(axis=0)
    return np.where((numbers == 0) & (counted > 0), np.nan, result)


def _top(vector: Vector, groups: list[list[int]], k: np.ndarray, largest: bool) -> Vector:
    """topk/bottomk: per group and step the k largest (smallest) present samples, labels kept; NaN
    ranks below every number either way."""
    present = np.zeros_like(vector.present)
    for step in range(vector.values.shape[1]):
        wanted = int(k[step]) if math.isfinite(k[step]) else 0
        if wanted < 1:
            continue
        for members in groups:
            rows = np.array(members)
            here = vector.present[rows, step]
            if not here.any():
                continue
            values = vector.values[rows, step]
            number = here & ~np.isnan(values)
            tier = np.where(number, 2, np.where(here, 1, 0))
            order = np.lexsort((values if largest else -values, tier))
            chosen = rows[order[::-1][:wanted]]
            present[chosen, step] = vector.present[chosen, step]
    return Vector(vector.labels, vector.values, present)


@dataclass
class _Windows:
    """One series' samples and, per step, its window [lo, hi) of sample positions."""

    times: np.ndarray
    values: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    steps: np.ndarray
    range_ms: int

    @property
    def counts(self) -> np.ndarray:
        return self.hi - self.lo

    def reduce(self, ufunc: np.ufunc, data: np.ndarray | None = None) -> np.ndarray:
        """ufunc over each window (meaningless where the window is empty)."""
        source = self.values if data is None else data
        padded = np.append(source, 0.0)
        bounds = np.empty(2 * len(self.lo), dtype=np.int64)
        bounds[0::2], bounds[1::2] = self.lo, self.hi
        if not len(bounds):
            return np.zeros(0)
        return ufunc.reduceat(padded, bounds)[0::2]


def _extrapolated(window: _Windows, counter: bool, per_second: bool) -> tuple[np.ndarray, np.ndarray]:
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
            fell = vs[1:] < vs[:-1]
            drops[1:] = np.where(fell, vs[:-1], 0.0)
        # Resets inside the window: drops at positions lo+1 … hi-1.
        sub = _Windows(ts, vs, lo[present] + 1, hi[present], window.steps[present], window.range_ms)
        result = result + sub.reduce(np.add, drops)
    steps = window.steps[present].astype(np.float64)
    range_start = steps - window.range_ms
    to_start = (first_t - range_start) / 1000
    to_end = (steps - last_t) / 1000
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


def _instant_rate(window: _Windows, counter: bool) -> tuple[np.ndarray, np.ndarray]:
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


def _windowed(
    compute: Callable[[np.ndarray], float],
) -> Callable[[_Windows, Scalar | None], tuple[np.ndarray, np.ndarray]]:
    def run(window: _Windows, parameter: Scalar | None) -> tuple[np.ndarray, np.ndarray]:
        present = window.counts > 0
        out = np.zeros(len(window.lo))
        for index in np.flatnonzero(present).tolist():
            out[index] = compute(window.values[window.lo[index] : window.hi[index]])
        return out, present

    return run


def _over_time_sum(window: _Windows, _: Scalar | None) -> tuple[np.ndarray, np.ndarray]:
    return window.reduce(np.add), window.counts > 0


def _over_time_avg(window: _Windows, _: Scalar | None) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        return window.reduce(np.add) / window.counts, window.counts > 0


def _over_time_extreme(largest: bool) -> Callable[[_Windows, Scalar | None], tuple[np.ndarray, np.ndarray]]:
    def run(window: _Windows, _: Scalar | None) -> tuple[np.ndarray, np.ndarray]:
        # fmax/fmin skip NaN unless all are NaN: Prometheus' rule (a number replaces NaN).
        return window.reduce(np.fmax if largest else np.fmin), window.counts > 0

    return run


def _quantile(window: _Windows, parameter: Scalar | None) -> tuple[np.ndarray, np.ndarray]:
    assert parameter is not None
    present = window.counts > 0
    out = np.zeros(len(window.lo))
    for index in np.flatnonzero(present).tolist():
        q = float(parameter.values[index])
        values = np.sort(window.values[window.lo[index] : window.hi[index]])
        if math.isnan(q):
            out[index] = math.nan
        elif q < 0:
            out[index] = -math.inf
        elif q > 1:
            out[index] = math.inf
        else:
            rank = q * (len(values) - 1)
            below = max(0, math.floor(rank))
            above = min(len(values) - 1, below + 1)
            weight = rank - math.floor(rank)
            out[index] = values[below] * (1 - weight) + values[above] * weight
    return out, present


def _variance(values: np.ndarray) -> float:
    mean = values.sum() / len(values)
    return float(((values - mean) ** 2).sum() / len(values))


_RANGE_FUNCTIONS: dict[str, Callable[[_Windows, Scalar | None], tuple[np.ndarray, np.ndarray]]] = {
    "rate": lambda w, _: _extrapolated(w, counter=True, per_second=True),
    "increase": lambda w, _: _extrapolated(w, counter=True, per_second=False),
    "delta": lambda w, _: _extrapolated(w, counter=False, per_second=False),
    "irate": lambda w, _: _instant_rate(w, counter=True),
    "idelta": lambda w, _: _instant_rate(w, counter=False),
    "sum_over_time": _over_time_sum,
    "avg_over_time": _over_time_avg,
    "min_over_time": _over_time_extreme(largest=False),
    "max_over_time": _over_time_extreme(largest=True),
    "count_over_time": lambda w, _: (w.counts.astype(np.float64), w.counts > 0),
    "last_over_time": lambda w, _: (
        w.values[np.maximum(w.hi - 1, 0)] if len(w.values) else np.zeros(len(w.hi)),
        w.counts > 0,
    ),
    "present_over_time": lambda w, _: (np.ones(len(w.lo)), w.counts > 0),
    "stdvar_over_time": _windowed(_variance),
    "stddev_over_time": _windowed(lambda values: math.sqrt(_variance(values))),
    "quantile_over_time": _quantile,
}

_MATH: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs,
    "ceil": np.ceil,
    "floor": np.floor,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "ln": np.log,
    "log2": np.log2,
    "log10": np.log10,
}
