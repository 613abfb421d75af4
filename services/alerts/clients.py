"""What the alerts context asks of the metrics and agents services, through their typed stubs:
every call with a deadline and the service token; idempotent reads retried on UNAVAILABLE."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration

from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2, metrics_pb2_grpc
from services.alerts.domain import Found
from services.alerts.ports import AgentLiveness, WrittenSeries
from services.alerts.rules import LivenessCondition, MetricCondition
from services.common.aggregations import BY_NAME as AGGREGATIONS
from services.common.clients import call_idempotent
from services.common.errors import DomainError, InvalidArgument, ResourceExhausted, Unavailable
from services.common.timestamps import to_timestamp

Response = TypeVar("Response")

_STATUSES = {"stale": agents_pb2.AGENT_STATUS_STALE, "offline": agents_pb2.AGENT_STATUS_OFFLINE}


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _domain_error(code: grpc.StatusCode | None, detail: str, service: str) -> DomainError:
    """What a failed call means for a rule: its own mistake (a PromQL error, a query over the
    limits) is said as such; anything else is the service being unavailable."""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(detail)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(detail)
    name = code.name if code is not None else "no response"
    return Unavailable(f"{service} service: {name}{': ' + detail if detail else ''}")


def _found(reply: metrics_pb2.InstantQueryResponse) -> list[Found] | DomainError:
    """An instant query's samples; a scalar is one sample without labels, as Prometheus' rules take it."""
    if reply.result_type == "scalar":
        return [Found({}, reply.scalar)]
    if reply.result_type != "vector":
        return InvalidArgument(f"the expression's result is a {reply.result_type}, not a vector or a scalar")
    return [Found({label.name: label.value for label in s.labels}, s.value) for s in reply.samples]


class _Client:
    def __init__(self, name: str, service_token: str, timeout_s: float, stop: threading.Event | None) -> None:
        self._name = name
        self._metadata = (("authorization", f"Bearer {service_token}"),)
        self._timeout_s = timeout_s
        self._stop = stop

    def _read(self, call: Callable[[float], Response]) -> Response:
        try:
            return call_idempotent(call, timeout_s=self._timeout_s, stop=self._stop)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def _error(self, exc: grpc.RpcError) -> DomainError:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        return _domain_error(code, exc.details() if isinstance(exc, grpc.Call) else "", self._name)


class MetricsClient(_Client):
    def __init__(
        self, channel: grpc.Channel, service_token: str, timeout_s: float, stop: threading.Event | None = None
    ) -> None:
        super().__init__("metrics", service_token, timeout_s, stop)
        self._stub = metrics_pb2_grpc.MetricsServiceStub(channel)

    def metric_names(self) -> set[str]:
        request = metrics_pb2.ListMetricNamesRequest()
        reply = self._read(
            lambda timeout: self._stub.ListMetricNames(request, timeout=timeout, metadata=self._metadata)
        )
        return {metric.name for metric in reply.metrics}

    def evaluate(self, condition: MetricCondition, now_ms: int) -> list[Found]:
        """One bucket spanning exactly the window, per group, with its value; the engine compares
        (rules sharing the query share this call)."""
        window_ms = int(condition.window_s * 1000)
        step = Duration()
        step.FromMilliseconds(window_ms + 1)  # buckets are [start + k*step, ...): one covers [now - window, now]
        request = metrics_pb2.QueryRangeRequest(
            selector=metrics_pb2.Selector(selector=condition.selector),
            start=to_timestamp(now_ms - window_ms),
            end=to_timestamp(now_ms),
            step=step,
            aggregation=AGGREGATIONS[condition.aggregation],
            group_by=list(condition.group_by),
        )
        reply = self._read(lambda timeout: self._stub.QueryRange(request, timeout=timeout, metadata=self._metadata))
        return [
            Found({label.name: label.value for label in series.labels}, series.values[-1])
            for series in reply.series
            if series.values
        ]

    def instant_query(self, expr: str, at_ms: int) -> list[Found]:
        """The PromQL expression's result at `at_ms`, by the metrics service's PromQL engine: a
        vector's samples, or a scalar as one sample without labels (as Prometheus' rules take it)."""
        request = metrics_pb2.InstantQueryRequest(query=expr, time=to_timestamp(at_ms))
        reply = self._read(lambda timeout: self._stub.InstantQuery(request, timeout=timeout, metadata=self._metadata))
        found = _found(reply)
        if isinstance(found, DomainError):
            raise found
        return found

    def instant_queries(self, exprs: list[str], at_ms: int) -> list[list[Found] | DomainError]:
        request = metrics_pb2.InstantQueriesRequest(queries=exprs, time=to_timestamp(at_ms))
        reply = self._read(lambda timeout: self._stub.InstantQueries(request, timeout=timeout, metadata=self._metadata))
        answers: list[list[Found] | DomainError] = []
        for result in reply.results:
            if result.error_code:
                answers.append(_domain_error(_CODES.get(result.error_code), result.error, self._name))
            else:
                answers.append(_found(result.response))
        return answers

    def write(self, series: list[WrittenSeries], at_ms: int) -> None:
        """Store one sample per series at `at_ms` through the ingest path (StreamMetrics with the
        service token: the rules writer), returning once the metrics service has committed it.
        Raises Unavailable when it could not; a refused series is named in the error."""
        if not series:
            return
        batch = metrics_pb2.MetricBatch(
            sequence=1,
            metadata=[
                metrics_pb2.MetricMetadata(name=name, type=metrics_pb2.METRIC_TYPE_GAUGE, help=help_text)
                for name, help_text in sorted({(s.labels["__name__"], s.help) for s in series if s.help})
            ],
            series=[
                metrics_pb2.SeriesSamples(
                    labels=[metrics_pb2.Label(name=k, value=v) for k, v in sorted(s.labels.items())],
                    timestamps_ms=[at_ms],
                    values=[s.value],
                )
                for s in series
            ],
        )
        try:
            acks = list(self._stub.StreamMetrics(iter([batch]), timeout=self._timeout_s, metadata=self._metadata))
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        refused = [r for ack in acks for r in ack.rejections if r.reason != metrics_pb2.REJECTION_REASON_OUT_OF_ORDER]
        if refused:
            first = refused[0]
            raise Unavailable(
                f"the metrics service refused {len(refused)} written series, e.g. "
                f"{metrics_pb2.RejectionReason.Name(first.reason)}: {first.message}"
            )


class AgentsClient(_Client):
    def __init__(
        self, channel: grpc.Channel, service_token: str, timeout_s: float, stop: threading.Event | None = None
    ) -> None:
        super().__init__("agents", service_token, timeout_s, stop)
        self._stub = agents_pb2_grpc.AgentServiceStub(channel)

    def _list(self, request: agents_pb2.ListAgentsRequest) -> agents_pb2.ListAgentsResponse:
        return self._read(lambda timeout: self._stub.ListAgents(request, timeout=timeout, metadata=self._metadata))

    def evaluate(self, condition: LivenessCondition, now_ms: int) -> list[Found]:
        """Every agent in one of the statuses: labelled with its host and its own labels, valued
        with the seconds since its last heartbeat."""
        found, token = [], ""
        while True:
            request = agents_pb2.ListAgentsRequest(
                statuses=[_STATUSES[s] for s in condition.statuses],
                label_selector=dict(condition.agent_labels),
                page_size=1000,
                page_token=token,
            )
            page = self._list(request)
            for agent in page.agents:
                silent_s = max(0.0, (now_ms - agent.last_heartbeat_at.ToMilliseconds()) / 1000)
                found.append(Found({**dict(agent.labels), "host": agent.hostname}, silent_s))
            token = page.next_page_token
            if not token:
                return found

    def liveness(self) -> list[AgentLiveness]:
        """Every registered agent's liveness: its host and labels, whether it is online, and the
        seconds since its last heartbeat."""
        found, token = [], ""
        while True:
            page = self._list(agents_pb2.ListAgentsRequest(page_size=1000, page_token=token))
            for agent in page.agents:
                found.append(
                    AgentLiveness(
                        hostname=agent.hostname,
                        labels=dict(agent.labels),
                        online=agent.status == agents_pb2.AGENT_STATUS_ONLINE,
                        heartbeat_at_ms=agent.last_heartbeat_at.ToMilliseconds(),
                    )
                )
            token = page.next_page_token
            if not token:
                return found
