"""gRPC edge of the metrics context (asyncio): proto in, one use case, proto out.

Every method is a coroutine. A stream waiting for its next batch, or a watcher
waiting for its next sample, is a suspended coroutine on the event loop and
holds no thread; the CPU and database work of a batch or a query runs on a
bounded thread pool. Each stream has at most one batch in that pool at a time,
so the pool serves streams in turn and no agent's batches wait behind another
agent's backlog.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc

from infrawatch.metrics.v1 import metrics_pb2 as pb
from services.common.credentials import Credentials
from services.common.errors import DomainError, InvalidArgument, ResourceExhausted
from services.common.grpc_errors import status_for
from services.common.metadata import bearer_token
from services.common.selectors import Matcher, MatchType
from services.common.timestamps import to_epoch_ms, to_milliseconds, to_timestamp
from services.metrics.auth import AgentIdentity, CachedAuthenticator
from services.metrics.domain import Aggregation, LabelSet, MetricInfo
from services.metrics.ingest.columns import read_batch
from services.metrics.ingest.commit import GroupCommitter
from services.metrics.ingest.stream import BatchResult, Ingestor, IngestStream, PreparedBatch
from services.metrics.query import use_cases as query
from services.metrics.query.promql.evaluator import Evaluator, QueryLimits
from services.metrics.query.promql.selection_cache import SelectionCache
from services.metrics.query.promql.values import Matrix, Scalar, Text, Vector
from services.metrics.query.use_cases import QueryContext
from services.metrics.telemetry import MetricsTelemetry
from services.metrics.watch import Update, WatchHub

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MetricsService"].full_name
WATCH_POLL_S = 0.25
WATCH_UPDATES_PER_MESSAGE = 1000
"""Series updates per WatchMetricsResponse (one batch's samples of one series each)."""
PIPELINE_DEPTH = 3
"""Batches of one stream in flight at once: one committing while the next is checked."""
MAX_QUERIES_PER_CALL = 1000
RULES_WRITER = AgentIdentity("infrawatch-rules", "")
"""Who writes with the service token: the alerts service's recording rules, ALERTS series and
agent liveness, a remote writer (labels kept as sent) whose series no agent can write into."""
T = TypeVar("T")
E = TypeVar("E", bound=enum.IntEnum)


def _labels(labels: LabelSet) -> list[pb.Label]:
    return [pb.Label(name=name, value=value) for name, value in labels]


def _enum(kind: type[E], value: int, field: str) -> E:
    """A proto enum value as the domain's enum; an unknown number is the caller's mistake."""
    try:
        return kind(value)
    except ValueError:
        raise InvalidArgument(f"{field} {value} is not one of {[member.value for member in kind]}") from None


def _match_type(value: int) -> MatchType:
    return _enum(MatchType, value, "matcher type")


def _matchers(selector: pb.Selector, required: bool = True) -> list[Matcher]:
    structured = [Matcher(m.name, _match_type(m.type), m.value) for m in selector.matchers]
    return query.matchers_from(selector.selector, structured, required)


def _metadata(info: MetricInfo) -> pb.MetricMetadata:
    return pb.MetricMetadata(name=info.name, type=int(info.type), unit=info.unit, help=info.help)


def _ack(result: BatchResult) -> pb.BatchAck:
    return pb.BatchAck(
        sequence=result.sequence,
        samples_accepted=result.accepted,
        samples_rejected=result.rejected,
        samples_duplicate=result.duplicate,
        rejections=[
            pb.Rejection(series_index=r.series_index, reason=int(r.reason), samples=r.samples, message=r.message)
            for r in result.rejections
        ],
    )


def _points(updates: Sequence[Update]) -> list[pb.SeriesPoints]:
    return [
        pb.SeriesPoints(labels=_labels(series.labels), timestamps_ms=times, values=values)
        for series, times, values in updates
    ]


class StreamSlots:
    """A cap on concurrently open streams of one kind, in total and per caller: past either a new
    stream is refused at once with RESOURCE_EXHAUSTED naming the setting, rather than queued where
    nobody can see it. Ingest and watch streams have caps of their own, so watchers (reads may be
    anonymous) can never take the slots agents need, and a per-caller cap keeps one credential (or
    one anonymous address) from taking every slot of its kind."""

    def __init__(
        self,
        limit: int,
        per_caller: int | None = None,
        setting: str = "INFRAWATCH_MAX_STREAMS",
        per_caller_setting: str = "",
    ) -> None:
        self.limit = limit
        self.per_caller = per_caller if per_caller is not None else limit
        self._setting = setting
        self._per_caller_setting = per_caller_setting
        self._open = 0
        self._by_caller: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def open(self) -> int:
        return self._open

    @contextmanager
    def hold(self, caller: str | None = "") -> Iterator[None]:
        """A slot for the stream's life; `caller` None is counted in the total only (the gateway,
        which relays every operator's watch under the service token)."""
        key = caller if caller is not None else ""
        with self._lock:
            if self._open >= self.limit:
                raise ResourceExhausted(
                    f"this metrics service already holds {self.limit} open streams of this kind ({self._setting}); "
                    "retry with backoff, or add a metrics replica"
                )
            held = self._by_caller.get(key, 0)
            if caller is not None and held >= self.per_caller:
                raise ResourceExhausted(
                    f"this caller already holds {held} open streams of this kind; the limit is {self.per_caller} "
                    f"per caller ({self._per_caller_setting})"
                )
            self._open += 1
            self._by_caller[key] = held + 1
        try:
            yield
        finally:
            with self._lock:
                self._open -= 1
                left = self._by_caller[key] - 1
                if left:
                    self._by_caller[key] = left
                else:
                    del self._by_caller[key]


def watch_caller(token: str, peer: str) -> str:
    """Who a watcher is, for its per-caller cap: its credential, or (anonymous) its address."""
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    host = peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer
    return "anonymous:" + host


class MetricsServicer:
    def __init__(
        self,
        ingestor: Ingestor,
        queries: QueryContext,
        hub: WatchHub,
        authenticator: CachedAuthenticator,
        stop: threading.Event,
        *,
        ingest_pool: Executor,
        query_pool: Executor,
        slots: StreamSlots,
        watch_slots: StreamSlots | None = None,
        committer: GroupCommitter,
        credentials: Credentials,
        telemetry: MetricsTelemetry,
        promql_pool: Executor | None = None,
        promql_limits: QueryLimits | None = None,
        lookback_ms: int = 300_000,
        selection_cache: SelectionCache | None = None,
    ) -> None:
        self._ingestor = ingestor
        self._queries = queries
        self._hub = hub
        self._auth = authenticator
        self._stop = stop
        self._ingest_pool = ingest_pool
        self._query_pool = query_pool
        self._slots = slots
        self._watch_slots = watch_slots or slots
        self._committer = committer
        self._credentials = credentials
        self._telemetry = telemetry
        self._promql_pool = promql_pool or query_pool
        self._promql_limits = promql_limits or QueryLimits()
        self._lookback_ms = lookback_ms
        self._selection_cache = selection_cache

    def _identify(self, token: str) -> tuple[AgentIdentity, bool]:
        """Who writes, and whether as a remote writer: the service token is the rules writer."""
        if self._credentials.is_service(token):
            return RULES_WRITER, True
        return self._auth.identify(token), False

    async def _on(self, pool: Executor, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, work, *args)

    async def _read(self, context: Any, work: Callable[..., T], *args: Any) -> T:
        """A read: allowed to whoever may read (everyone unless reads are protected), on the query pool."""
        self._credentials.require_reader(bearer_token(context))
        return await self._on(self._query_pool, work, *args)

    def _prepare(self, stream: IngestStream, token: str, data: bytes) -> PreparedBatch:
        self._identify(token)  # a revoked token stops the stream within the cache TTL
        return stream.prepare(read_batch(data))

    def _committed(self, prepared: PreparedBatch, arrived: float) -> asyncio.Future[pb.BatchAck]:
        """An asyncio future resolved, on this loop, when the committer has written the batch."""
        acknowledged: asyncio.Future[pb.BatchAck] = asyncio.get_running_loop().create_future()
        ack = _ack(prepared.result)

        def settle(committed: asyncio.Future[None]) -> None:
            if acknowledged.done():
                return
            error = committed.exception()
            if error is None:
                if prepared.stream.agent_id == RULES_WRITER.agent_id and self._selection_cache is not None:
                    # The rules read what they just wrote (a recording rule's result) at this instant.
                    self._selection_cache.clear()
                self._telemetry.acknowledged(prepared.result, time.perf_counter() - arrived)
                acknowledged.set_result(ack)
            else:
                acknowledged.set_exception(error)

        self._committer.future(prepared).add_done_callback(settle)
        return acknowledged

    async def StreamMetrics(self, request_iterator: AsyncIterator[bytes], context: Any) -> AsyncIterator[pb.BatchAck]:
        """Batches are checked on the ingest pool and written by the group committer. While one
        batch commits the next is already read and checked (at most PIPELINE_DEPTH in flight per
        stream); acks go out in order, each as soon as its batch has committed."""
        token = bearer_token(context)
        identity, remote_writer = await self._on(self._ingest_pool, self._identify, token)
        with self._slots.hold(identity.agent_id):
            stream = self._ingestor.open_stream(identity.agent_id, identity.hostname, remote_writer)
            in_flight: asyncio.Queue[asyncio.Future[pb.BatchAck] | None] = asyncio.Queue(PIPELINE_DEPTH - 1)

            async def read() -> None:
                try:
                    async for data in request_iterator:
                        arrived = time.perf_counter()
                        prepared = await self._on(self._ingest_pool, self._prepare, stream, token, data)
                        await in_flight.put(self._committed(prepared, arrived))
                finally:
                    await in_flight.put(None)

            reader = asyncio.create_task(read())
            try:
                while (pending := await in_flight.get()) is not None:
                    yield await pending
                await reader  # a batch that could not be read or checked ends the stream here
            finally:
                reader.cancel()

    def _query_range(self, request: pb.QueryRangeRequest) -> pb.QueryRangeResponse:
        began = time.perf_counter()
        aggregation = _enum(Aggregation, request.aggregation, "aggregation")
        result = query.query_range(
            self._queries,
            _matchers(request.selector),
            start_ms=to_epoch_ms(request.start, "start", round_up=True) if request.HasField("start") else None,
            end_ms=to_epoch_ms(request.end, "end") if request.HasField("end") else None,
            step_ms=to_milliseconds(request.step, "step") if request.HasField("step") else None,
            aggregation=aggregation,
            group_by=list(request.group_by),
        )
        kind = {Aggregation.NONE: "raw", Aggregation.RATE: "rate"}.get(aggregation, "aggregate")
        self._telemetry.query_seconds.labels(kind).observe(time.perf_counter() - began)
        return pb.QueryRangeResponse(
            series=[
                pb.SeriesPoints(labels=_labels(s.labels), timestamps_ms=s.timestamps, values=s.values)
                for s in result.series
            ],
            matched_series=result.matched_series,
        )

    async def QueryRange(self, request: pb.QueryRangeRequest, context: Any) -> pb.QueryRangeResponse:
        return await self._read(context, self._query_range, request)

    def _latest_values(self, request: pb.LatestValuesRequest) -> pb.LatestValuesResponse:
        began = time.perf_counter()
        samples = query.latest_values(self._queries, _matchers(request.selector), request.highest, request.since_ms)
        self._telemetry.query_seconds.labels("latest").observe(time.perf_counter() - began)
        return pb.LatestValuesResponse(
            samples=[pb.LatestSample(labels=_labels(labels), timestamp_ms=t, value=v) for labels, t, v in samples]
        )

    async def LatestValues(self, request: pb.LatestValuesRequest, context: Any) -> pb.LatestValuesResponse:
        return await self._read(context, self._latest_values, request)

    def _list_series(self, request: pb.ListSeriesRequest) -> pb.ListSeriesResponse:
        page, token = query.list_series(
            self._queries, _matchers(request.selector, required=False), request.page_size, request.page_token
        )
        return pb.ListSeriesResponse(
            series=[pb.SeriesLabels(labels=_labels(labels)) for labels in page], next_page_token=token
        )

    async def ListSeries(self, request: pb.ListSeriesRequest, context: Any) -> pb.ListSeriesResponse:
        return await self._read(context, self._list_series, request)

    def _list_metric_names(self, request: pb.ListMetricNamesRequest) -> pb.ListMetricNamesResponse:
        return pb.ListMetricNamesResponse(
            metrics=[_metadata(info) for info in query.list_metric_names(self._queries)],
            conflicts=[
                pb.MetadataConflict(
                    kept=_metadata(c.kept), refused=_metadata(c.refused), agent_id=c.agent_id, times=c.times
                )
                for c in self._queries.catalog.conflicts()
            ],
            label_names=[name for name in self._queries.catalog.label_names() if name != "__name__"],
        )

    async def ListMetricNames(self, request: pb.ListMetricNamesRequest, context: Any) -> pb.ListMetricNamesResponse:
        return await self._read(context, self._list_metric_names, request)

    def _instant_query(self, request: pb.InstantQueryRequest, limits: QueryLimits) -> pb.InstantQueryResponse:
        if not request.query.strip():
            raise InvalidArgument("query is required: a PromQL expression such as `up == 0`")
        began = time.perf_counter()
        at_ms = to_epoch_ms(request.time, "time") if request.HasField("time") else self._queries.now_ms()
        evaluator = Evaluator(self._queries, self._lookback_ms, limits, self._selection_cache)
        result = evaluator.instant(request.query, at_ms / 1000)
        self._telemetry.query_seconds.labels("promql").observe(time.perf_counter() - began)
        value = result.value
        if isinstance(value, Scalar):
            return pb.InstantQueryResponse(result_type="scalar", scalar=float(value.values[0]), time_ms=at_ms)
        if isinstance(value, Text):
            return pb.InstantQueryResponse(result_type="string", text=value.value, time_ms=at_ms)
        if isinstance(value, Matrix):
            raise InvalidArgument(
                "the expression is a range vector; an instant query answers an instant vector, a scalar or a "
                "string (apply a function such as rate(...) or last_over_time(...))"
            )
        order = value.order if value.order is not None else range(len(value.labels))
        return pb.InstantQueryResponse(
            result_type="vector",
            samples=[
                pb.InstantSample(labels=_labels(value.labels[i]), value=float(value.values[i, 0]))
                for i in order
                if value.present[i, 0]
            ],
            time_ms=at_ms,
        )

    def _bounded(self, context: Any, gone: threading.Event) -> QueryLimits:
        """The PromQL limits, the timeout shortened to the caller's deadline, stopped when it goes."""
        limits = self._promql_limits
        remaining = context.time_remaining()
        timeout = limits.timeout_s if remaining is None else max(0.001, min(limits.timeout_s, remaining))
        return QueryLimits(limits.max_samples, limits.max_points, timeout, cancelled=gone.is_set)

    async def InstantQuery(self, request: pb.InstantQueryRequest, context: Any) -> pb.InstantQueryResponse:
        """On the PromQL pool, under the PromQL limits; the caller's deadline shortens the timeout,
        and a caller that goes away stops the evaluation."""
        self._credentials.require_reader(bearer_token(context))
        gone = threading.Event()
        try:
            return await self._on(self._promql_pool, self._instant_query, request, self._bounded(context, gone))
        finally:
            gone.set()

    def _instant_queries(self, request: pb.InstantQueriesRequest, limits: QueryLimits) -> pb.InstantQueriesResponse:
        if len(request.queries) > MAX_QUERIES_PER_CALL:
            raise InvalidArgument(f"{len(request.queries)} queries in one call; at most {MAX_QUERIES_PER_CALL}")
        at = request.time if request.HasField("time") else to_timestamp(self._queries.now_ms())
        results = []
        for expression in request.queries:
            try:
                answer = self._instant_query(pb.InstantQueryRequest(query=expression, time=at), limits)
                results.append(pb.InstantQueryResult(response=answer))
            except DomainError as exc:
                results.append(pb.InstantQueryResult(error_code=status_for(exc).value[0], error=str(exc)))
        return pb.InstantQueriesResponse(results=results)

    async def InstantQueries(self, request: pb.InstantQueriesRequest, context: Any) -> pb.InstantQueriesResponse:
        """InstantQuery for each expression, in one call (and one trip to the PromQL pool), each
        under the PromQL limits of its own."""
        self._credentials.require_reader(bearer_token(context))
        gone = threading.Event()
        try:
            return await self._on(self._promql_pool, self._instant_queries, request, self._bounded(context, gone))
        finally:
            gone.set()

    def _range_query(self, request: pb.RangeQueryRequest, limits: QueryLimits) -> pb.RangeQueryResponse:
        if not request.query.strip():
            raise InvalidArgument("query is required: a PromQL expression such as `rate(node_cpu_seconds_total[5m])`")
        began = time.perf_counter()
        end_ms = to_epoch_ms(request.end, "end") if request.HasField("end") else self._queries.now_ms()
        start_ms = to_epoch_ms(request.start, "start") if request.HasField("start") else end_ms - 3_600_000
        step_ms = to_milliseconds(request.step, "step") if request.HasField("step") else 60_000
        evaluator = Evaluator(self._queries, self._lookback_ms, limits)
        result = evaluator.range(request.query, start_ms / 1000, end_ms / 1000, step_ms / 1000)
        self._telemetry.query_seconds.labels("promql").observe(time.perf_counter() - began)
        value = result.value
        if isinstance(value, Scalar):
            points = pb.SeriesPoints(timestamps_ms=result.steps.tolist(), values=value.values.tolist())
            return pb.RangeQueryResponse(series=[points], result_type="scalar")
        if not isinstance(value, Vector):
            raise InvalidArgument("a range query needs an instant vector or a scalar expression")
        series = []
        for i in sorted(range(len(value.labels)), key=lambda i: value.labels[i]):
            where = value.present[i]
            if where.any():
                series.append(
                    pb.SeriesPoints(
                        labels=_labels(value.labels[i]),
                        timestamps_ms=result.steps[where].tolist(),
                        values=value.values[i][where].tolist(),
                    )
                )
        return pb.RangeQueryResponse(series=series, result_type="matrix")

    async def RangeQuery(self, request: pb.RangeQueryRequest, context: Any) -> pb.RangeQueryResponse:
        """As InstantQuery, over a range of instants."""
        self._credentials.require_reader(bearer_token(context))
        gone = threading.Event()
        try:
            return await self._on(self._promql_pool, self._range_query, request, self._bounded(context, gone))
        finally:
            gone.set()

    async def WatchMetrics(
        self, request: pb.WatchMetricsRequest, context: Any
    ) -> AsyncIterator[pb.WatchMetricsResponse]:
        token = bearer_token(context)
        self._credentials.require_reader(token)
        matchers = _matchers(request.selector)
        caller = None if self._credentials.is_service(token) else watch_caller(token, context.peer() or "")
        with self._watch_slots.hold(caller):
            subscription = self._hub.subscribe(matchers, asyncio.get_running_loop())
            try:
                await context.send_initial_metadata(())
                while not self._stop.is_set():
                    updates = await subscription.next(WATCH_POLL_S)
                    # A watcher catching up gets its backlog in several bounded messages, never
                    # one beyond the message size limit.
                    for first in range(0, len(updates), WATCH_UPDATES_PER_MESSAGE):
                        yield pb.WatchMetricsResponse(
                            series=_points(updates[first : first + WATCH_UPDATES_PER_MESSAGE])
                        )
            finally:
                self._hub.unsubscribe(subscription)


def add_to_server(servicer: MetricsServicer, server: grpc.aio.Server) -> None:
    """Register the MetricsService methods. StreamMetrics takes its requests as raw bytes (no
    deserializer): `ingest.columns.read_batch` parses them as columns on the ingest pool."""

    def unary(method: Callable[..., Any], request_type: Any, response_type: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=request_type.FromString, response_serializer=response_type.SerializeToString
        )

    handlers = {
        "StreamMetrics": grpc.stream_stream_rpc_method_handler(
            servicer.StreamMetrics, request_deserializer=None, response_serializer=pb.BatchAck.SerializeToString
        ),
        "QueryRange": unary(servicer.QueryRange, pb.QueryRangeRequest, pb.QueryRangeResponse),
        "LatestValues": unary(servicer.LatestValues, pb.LatestValuesRequest, pb.LatestValuesResponse),
        "ListSeries": unary(servicer.ListSeries, pb.ListSeriesRequest, pb.ListSeriesResponse),
        "ListMetricNames": unary(servicer.ListMetricNames, pb.ListMetricNamesRequest, pb.ListMetricNamesResponse),
        "InstantQuery": unary(servicer.InstantQuery, pb.InstantQueryRequest, pb.InstantQueryResponse),
        "InstantQueries": unary(servicer.InstantQueries, pb.InstantQueriesRequest, pb.InstantQueriesResponse),
        "RangeQuery": unary(servicer.RangeQuery, pb.RangeQueryRequest, pb.RangeQueryResponse),
        "WatchMetrics": grpc.unary_stream_rpc_method_handler(
            servicer.WatchMetrics,
            request_deserializer=pb.WatchMetricsRequest.FromString,
            response_serializer=pb.WatchMetricsResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
