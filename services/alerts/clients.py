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
from services.alerts.rules import LivenessCondition, MetricCondition
from services.common.aggregations import BY_NAME as AGGREGATIONS
from services.common.clients import call_idempotent
from services.common.errors import Unavailable
from services.common.timestamps import to_timestamp

Response = TypeVar("Response")

_STATUSES = {"stale": agents_pb2.AGENT_STATUS_STALE, "offline": agents_pb2.AGENT_STATUS_OFFLINE}


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
            code = exc.code().name if isinstance(exc, grpc.Call) else "no response"
            detail = exc.details() if isinstance(exc, grpc.Call) else ""
            raise Unavailable(f"{self._name} service: {code}{': ' + detail if detail else ''}") from None


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
