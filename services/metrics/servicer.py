"""gRPC edge of the metrics context: proto in, one use case, proto out."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

import grpc

from infrawatch.metrics.v1 import metrics_pb2 as pb
from infrawatch.metrics.v1 import metrics_pb2_grpc
from services.common.metadata import bearer_token
from services.common.timestamps import to_epoch_ms
from services.metrics.auth import CachedAuthenticator
from services.metrics.domain import Aggregation, LabelSet, Matcher, MatchType, MetricInfo, MetricType
from services.metrics.ingest.stream import BatchResult, IncomingBatch, IncomingSeries, Ingestor
from services.metrics.query import use_cases as query
from services.metrics.query.use_cases import QueryContext
from services.metrics.watch import Update, WatchHub

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MetricsService"].full_name
WATCH_POLL_S = 0.25


def _labels(labels: LabelSet) -> list[pb.Label]:
    return [pb.Label(name=name, value=value) for name, value in labels]


def _matchers(selector: pb.Selector, required: bool = True) -> list[Matcher]:
    structured = [Matcher(m.name, MatchType(m.type), m.value) for m in selector.matchers]
    return query.matchers_from(selector.selector, structured, required)


def _batch_from(message: pb.MetricBatch) -> IncomingBatch:
    return IncomingBatch(
        sequence=message.sequence,
        metadata=[MetricInfo(m.name, MetricType(m.type), m.unit, m.help) for m in message.metadata],
        series=[
            IncomingSeries(
                labels=[(label.name, label.value) for label in s.labels] if s.labels else None,
                ref=s.ref,
                timestamps=list(s.timestamps_ms),
                values=list(s.values),
            )
            for s in message.series
        ],
    )


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


class MetricsServicer(metrics_pb2_grpc.MetricsServiceServicer):
    def __init__(
        self,
        ingestor: Ingestor,
        queries: QueryContext,
        hub: WatchHub,
        authenticator: CachedAuthenticator,
        stop: threading.Event,
    ) -> None:
        self._ingestor = ingestor
        self._queries = queries
        self._hub = hub
        self._auth = authenticator
        self._stop = stop

    def StreamMetrics(
        self, request_iterator: Iterator[pb.MetricBatch], context: grpc.ServicerContext
    ) -> Iterator[pb.BatchAck]:
        token = bearer_token(context)
        stream = self._ingestor.open_stream(self._auth.identify(token).agent_id)
        for message in request_iterator:
            self._auth.identify(token)
            yield _ack(stream.ingest(_batch_from(message)))

    def QueryRange(self, request: pb.QueryRangeRequest, context: grpc.ServicerContext) -> pb.QueryRangeResponse:
        result = query.query_range(
            self._queries,
            _matchers(request.selector),
            start_ms=to_epoch_ms(request.start) if request.HasField("start") else None,
            end_ms=to_epoch_ms(request.end) if request.HasField("end") else None,
            step_ms=request.step.ToMilliseconds() if request.HasField("step") else None,
            aggregation=Aggregation(request.aggregation),
            group_by=list(request.group_by),
        )
        return pb.QueryRangeResponse(
            series=[
                pb.SeriesPoints(labels=_labels(s.labels), timestamps_ms=s.timestamps, values=s.values)
                for s in result.series
            ],
            matched_series=result.matched_series,
        )

    def LatestValues(self, request: pb.LatestValuesRequest, context: grpc.ServicerContext) -> pb.LatestValuesResponse:
        samples = query.latest_values(self._queries, _matchers(request.selector))
        return pb.LatestValuesResponse(
            samples=[pb.LatestSample(labels=_labels(labels), timestamp_ms=t, value=v) for labels, t, v in samples]
        )

    def ListSeries(self, request: pb.ListSeriesRequest, context: grpc.ServicerContext) -> pb.ListSeriesResponse:
        page, token = query.list_series(
            self._queries, _matchers(request.selector, required=False), request.page_size, request.page_token
        )
        return pb.ListSeriesResponse(
            series=[pb.SeriesLabels(labels=_labels(labels)) for labels in page], next_page_token=token
        )

    def ListMetricNames(
        self, request: pb.ListMetricNamesRequest, context: grpc.ServicerContext
    ) -> pb.ListMetricNamesResponse:
        return pb.ListMetricNamesResponse(
            metrics=[
                pb.MetricMetadata(name=i.name, type=int(i.type), unit=i.unit, help=i.help)
                for i in query.list_metric_names(self._queries)
            ]
        )

    def WatchMetrics(
        self, request: pb.WatchMetricsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchMetricsResponse]:
        subscription = self._hub.subscribe(_matchers(request.selector))
        try:
            context.send_initial_metadata(())
            while context.is_active() and not self._stop.is_set():
                try:
                    updates = subscription.updates.get(timeout=WATCH_POLL_S)
                except queue.Empty:
                    continue
                while not subscription.updates.empty():
                    updates = updates + subscription.updates.get_nowait()
                yield pb.WatchMetricsResponse(series=_points(updates))
        finally:
            self._hub.unsubscribe(subscription)
