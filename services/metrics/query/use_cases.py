"""Query use cases: range queries with aggregation, latest values, series and metric names."""

from __future__ import annotations

import base64
import binascii
import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.selectors import Matcher, parse_selector
from services.metrics.domain import Aggregation, LabelSet, MetricInfo, Series
from services.metrics.query.aggregate import aggregate_stored
from services.metrics.storage.catalog import SeriesCatalog
from services.metrics.storage.ports import Querier, TooManyPoints

DEFAULT_RANGE_MS = 3600 * 1000
DEFAULT_STEP_MS = 60 * 1000
MAX_BUCKETS = 11_000
DEFAULT_SERIES_PAGE = 1000
MAX_SERIES_PAGE = 10_000


@dataclass(frozen=True)
class QueryContext:
    catalog: SeriesCatalog
    store: Querier
    now_ms: Callable[[], int]
    max_points: int = 1_000_000


@dataclass(frozen=True)
class ResultSeries:
    labels: LabelSet
    timestamps: list[int]
    values: list[float]


@dataclass(frozen=True)
class RangeResult:
    series: list[ResultSeries]
    matched_series: int


def matchers_from(selector: str, matchers: Sequence[Matcher], required: bool = True) -> list[Matcher]:
    """The selector string's matchers plus the structured ones; at least one when `required`."""
    combined = [*(parse_selector(selector) if selector.strip() else []), *matchers]
    if required and not combined:
        raise InvalidArgument('selector is required, e.g. cpu_usage_percent{host="web-1"}')
    if required and all(m.matches("") for m in combined):
        raise InvalidArgument("selector must contain at least one matcher that does not match the empty string")
    return combined


def select_series(ctx: QueryContext, matchers: Sequence[Matcher]) -> list[Series]:
    """The matching series, after picking up any that other replicas created."""
    ctx.catalog.refresh()
    return ctx.catalog.select(matchers)


def _check_points(count: int, limit: int, at_least: bool = False) -> None:
    if count > limit:
        raise ResourceExhausted(
            f"the query would return {'at least ' if at_least else ''}{count} points; the limit is {limit} "
            "(INFRAWATCH_MAX_QUERY_POINTS): "
            "narrow the range or selector, or aggregate with a larger step"
        )


def query_range(
    ctx: QueryContext,
    matchers: Sequence[Matcher],
    start_ms: int | None,
    end_ms: int | None,
    step_ms: int | None,
    aggregation: Aggregation,
    group_by: Sequence[str],
) -> RangeResult:
    """Raw samples, or aggregates per step bucket and group, of the matching series."""
    end = end_ms if end_ms is not None else ctx.now_ms()
    start = start_ms if start_ms is not None else end - DEFAULT_RANGE_MS
    if start > end:
        raise InvalidArgument("start must not be after end")
    step = step_ms if step_ms is not None else DEFAULT_STEP_MS
    if step < 1:
        raise InvalidArgument("step must be at least 1ms")
    selected = select_series(ctx, matchers)
    if not selected:
        return RangeResult([], 0)

    if aggregation is Aggregation.NONE:
        # Refused before a sample is read when the chunks wholly inside the range already hold too
        # many: an 8-million-point request must not grow the server by gigabytes first.
        try:
            found = ctx.store.raw([s.series_id for s in selected], start, end, refuse_above=ctx.max_points)
        except TooManyPoints as refused:
            _check_points(refused.at_least, ctx.max_points, at_least=True)
            raise
        _check_points(sum(len(t) for t, _ in found.values()), ctx.max_points)
        # A stored chunk may overlap the range without a sample inside it: such a series is not returned.
        series = [ResultSeries(s.labels, *found[s.series_id]) for s in selected if found.get(s.series_id, ((),))[0]]
        return RangeResult(series, len(selected))

    buckets = (end - start) // step + 1
    if buckets > MAX_BUCKETS:
        raise InvalidArgument(
            f"the range holds {buckets} steps; the limit is {MAX_BUCKETS}: use a larger step or a shorter range"
        )
    group_keys: dict[LabelSet, int] = {}
    groups: dict[int, int] = {}
    for s in selected:
        values = dict(s.labels)
        key = tuple((name, values[name]) for name in group_by if values.get(name))
        groups[s.series_id] = group_keys.setdefault(key, len(group_keys))
    _check_points(buckets * len(group_keys), ctx.max_points)
    computed = aggregate_stored(ctx.store, groups, start, end, step, aggregation)
    series = [
        ResultSeries(key, *computed[number])
        for key, number in sorted(group_keys.items())
        if computed.get(number, ((),))[0]
    ]
    return RangeResult(series, len(selected))


MAX_LATEST_HIGHEST = 10_000


def latest_values(
    ctx: QueryContext, matchers: Sequence[Matcher], highest: int = 0, since_ms: int = 0
) -> list[tuple[LabelSet, int, float]]:
    """Each selected series' newest sample, in label order; with `highest`, only the samples with
    the N highest values, highest first; with `since_ms`, only samples at or after it."""
    if highest > MAX_LATEST_HIGHEST:
        raise InvalidArgument(f"highest is {highest}; the limit is {MAX_LATEST_HIGHEST}")
    selected = select_series(ctx, matchers)
    latest = ctx.store.latest([s.series_id for s in selected])
    found = [
        (s.labels, *latest[s.series_id])
        for s in selected
        if s.series_id in latest and latest[s.series_id][0] >= since_ms
    ]
    if highest:
        return heapq.nlargest(highest, (f for f in found if not math.isnan(f[2])), key=lambda f: f[2])
    return found


def list_series(
    ctx: QueryContext, matchers: Sequence[Matcher], page_size: int, page_token: str
) -> tuple[list[LabelSet], str]:
    """Label sets in a stable order; the page token is the position after the previous page."""
    if page_size > MAX_SERIES_PAGE:
        raise InvalidArgument(f"page_size is {page_size}; the limit is {MAX_SERIES_PAGE}")
    size = page_size or DEFAULT_SERIES_PAGE
    offset = 0
    if page_token:
        try:
            offset = int(base64.b64decode(page_token, altchars=b"-_", validate=True).decode())
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise InvalidArgument("page_token is not a token returned by ListSeries") from None
    selected = select_series(ctx, matchers)
    page = [s.labels for s in selected[offset : offset + size]]
    more = offset + size < len(selected)
    token = base64.b64encode(str(offset + size).encode(), altchars=b"-_").decode() if more else ""
    return page, token


def list_metric_names(ctx: QueryContext) -> list[MetricInfo]:
    ctx.catalog.refresh()
    return ctx.catalog.metric_infos()
