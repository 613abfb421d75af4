"""Typed access to the agents and metrics services, as the gateway needs it.

Every call carries a deadline: the smaller of the configured downstream
timeout and what is left of the operator's own deadline. Reads are idempotent
and retry on UNAVAILABLE with jittered backoff; writes do not retry. Failures
are translated into domain errors that name the dependency, so nothing of a
downstream stack leaks to the operator.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from infrawatch.alerts.v1 import alerts_pb2, alerts_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2, metrics_pb2_grpc
from services.common import errors
from services.common.clients import call_idempotent
from services.common.grpc_errors import STATUS_BY_ERROR

Response = TypeVar("Response")
Stub = TypeVar("Stub")

_ERROR_BY_STATUS = {code: error for error, code in STATUS_BY_ERROR.items()}
_PASSED_THROUGH = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
DEADLINE_MARGIN_S = 0.05
"""Kept back from the caller's deadline so the gateway can still answer before it expires."""


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Options of the gateway's channels to agents and metrics: replies as large as the gateway
    itself accepts (gRPC's client default is 4 MB: a fleet overview of 20,000 hosts or a large
    metrics query would fail here otherwise), and round robin, so that behind a headless Service
    (dns:///...) calls spread over the replicas."""
    return [("grpc.max_receive_message_length", max_message_bytes), ("grpc.lb_policy_name", "round_robin")]


def translate(exc: grpc.RpcError, dependency: str) -> errors.DomainError:
    """A downstream failure as the domain error the operator should see."""
    # Both a call's error (grpc.Call) and an asyncio call's (AioRpcError, not a grpc.Call) say these.
    code = exc.code() if isinstance(exc, grpc.Call | grpc.aio.AioRpcError) else None
    details = exc.details() if isinstance(exc, grpc.Call | grpc.aio.AioRpcError) else ""
    if code is not None and code in _PASSED_THROUGH:
        return _ERROR_BY_STATUS[code](details or f"{dependency} service: {code.name}")
    reason = code.name if code is not None else "no response"
    return errors.Unavailable(f"{dependency} service unavailable ({reason})")


@dataclass(frozen=True)
class Budget:
    """What is left of the operator's deadline, in seconds (None: the caller set no deadline)."""

    remaining_s: float | None = None

    def timeout(self, default_s: float) -> float:
        if self.remaining_s is None:
            return default_s
        left = self.remaining_s - DEADLINE_MARGIN_S
        if left <= 0:
            raise errors.Unavailable("the call's deadline expired before the downstream services could answer")
        return min(default_s, left)


def bearer(token: str) -> tuple[tuple[str, str]]:
    """Call metadata presenting `token`."""
    return (("authorization", f"Bearer {token}"),)


class _Downstream:
    """Reads carry the service token (reads may be protected downstream); writes carry the
    operator's own token, which the downstream service checks again."""

    def __init__(
        self,
        name: str,
        service_token: str,
        timeout_s: float,
        stop: threading.Event | None,
        live_channel: Callable[[], grpc.aio.Channel] | None = None,
    ) -> None:
        self.name = name
        self._timeout_s = timeout_s
        self._stop = stop
        self._service = bearer(service_token)
        self._live_channel = live_channel
        self._live: Any = None

    def live(self, make_stub: Callable[[grpc.aio.Channel], Stub]) -> Stub:
        """The stub for server streams, on an asyncio channel (waiting holds no thread), made on
        first use inside the server's event loop, which the channel belongs to."""
        if self._live is None:
            if self._live_channel is None:
                raise errors.Unavailable(f"live {self.name} streams are not configured on this gateway")
            self._live = make_stub(self._live_channel())
        return self._live

    def read(self, call: Callable[[float], Response], budget: Budget) -> Response:
        try:
            return call_idempotent(call, timeout_s=budget.timeout(self._timeout_s), stop=self._stop)
        except grpc.RpcError as exc:
            raise translate(exc, self.name) from None

    async def relay(self, call: Any) -> AsyncIterator[Any]:
        """The messages of a downstream server stream (on an asyncio channel), its failures as
        domain errors naming the dependency; closing the iterator cancels the call."""
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise translate(exc, self.name) from None
        finally:
            call.cancel()

    def write(self, call: Callable[[float], Response], budget: Budget) -> Response:
        try:
            return call(budget.timeout(self._timeout_s))
        except grpc.RpcError as exc:
            raise translate(exc, self.name) from None


class AgentsClient(_Downstream):
    def __init__(
        self, channel: grpc.Channel, service_token: str, timeout_s: float, stop: threading.Event | None = None
    ) -> None:
        super().__init__("agents", service_token, timeout_s, stop)
        self._stub = agents_pb2_grpc.AgentServiceStub(channel)

    def get(self, budget: Budget, agent_id: str = "", hostname: str = "") -> agents_pb2.Agent:
        request = agents_pb2.GetAgentRequest(agent_id=agent_id, hostname=hostname)
        return self.read(
            lambda timeout: self._stub.GetAgent(request, timeout=timeout, metadata=self._service), budget
        ).agent

    def list(self, request: agents_pb2.ListAgentsRequest, budget: Budget) -> agents_pb2.ListAgentsResponse:
        return self.read(
            lambda timeout: self._stub.ListAgents(request, timeout=timeout, metadata=self._service), budget
        )

    def count(self, budget: Budget) -> dict[int, int]:
        reply = self.read(
            lambda timeout: self._stub.CountAgents(
                agents_pb2.CountAgentsRequest(), timeout=timeout, metadata=self._service
            ),
            budget,
        )
        return {entry.status: entry.count for entry in reply.counts}

    def deregister(self, agent_id: str, operator_token: str, budget: Budget) -> agents_pb2.Agent:
        request = agents_pb2.DeregisterAgentRequest(agent_id=agent_id)
        metadata = bearer(operator_token)
        reply = self.write(
            lambda timeout: self._stub.DeregisterAgent(request, timeout=timeout, metadata=metadata), budget
        )
        return reply.agent

    def approve(self, hostname: str, operator_token: str, budget: Budget) -> agents_pb2.Agent:
        request = agents_pb2.ApproveAgentRequest(hostname=hostname)
        metadata = bearer(operator_token)
        reply = self.write(lambda timeout: self._stub.ApproveAgent(request, timeout=timeout, metadata=metadata), budget)
        return reply.agent

    def remote_write_credentials(self, method: str, request: Any, operator_token: str, budget: Budget) -> Any:
        """Create, List or Revoke a remote-write credential (`method` names the agents RPC), as the operator."""
        rpc = getattr(self._stub, method)
        metadata = bearer(operator_token)
        return self.write(lambda timeout: rpc(request, timeout=timeout, metadata=metadata), budget)


class MetricsClient(_Downstream):
    def __init__(
        self,
        channel: grpc.Channel,
        service_token: str,
        timeout_s: float,
        stop: threading.Event | None = None,
        live_channel: Callable[[], grpc.aio.Channel] | None = None,
    ) -> None:
        super().__init__("metrics", service_token, timeout_s, stop, live_channel)
        self._stub = metrics_pb2_grpc.MetricsServiceStub(channel)

    def latest(
        self, selector: str, budget: Budget, highest: int = 0, since_ms: int = 0
    ) -> list[metrics_pb2.LatestSample]:
        request = metrics_pb2.LatestValuesRequest(
            selector=metrics_pb2.Selector(selector=selector), highest=highest, since_ms=since_ms
        )
        return list(
            self.read(
                lambda timeout: self._stub.LatestValues(request, timeout=timeout, metadata=self._service), budget
            ).samples
        )

    def query(self, request: metrics_pb2.QueryRangeRequest, budget: Budget) -> metrics_pb2.QueryRangeResponse:
        return self.read(
            lambda timeout: self._stub.QueryRange(request, timeout=timeout, metadata=self._service), budget
        )

    def promql(self, request: metrics_pb2.RangeQueryRequest, budget: Budget) -> metrics_pb2.RangeQueryResponse:
        return self.read(
            lambda timeout: self._stub.RangeQuery(request, timeout=timeout, metadata=self._service), budget
        )

    def metric_names(self, budget: Budget) -> metrics_pb2.ListMetricNamesResponse:
        request = metrics_pb2.ListMetricNamesRequest()
        return self.read(
            lambda timeout: self._stub.ListMetricNames(request, timeout=timeout, metadata=self._service), budget
        )

    async def watch(self, selector: metrics_pb2.Selector) -> AsyncIterator[metrics_pb2.WatchMetricsResponse]:
        """A live stream of new samples, on an asyncio channel so that waiting holds no thread. It
        has no deadline (it lasts as long as the operator watches); closing the iterator ends it."""
        call = self.live(metrics_pb2_grpc.MetricsServiceStub).WatchMetrics(
            metrics_pb2.WatchMetricsRequest(selector=selector), metadata=self._service
        )
        async for message in self.relay(call):
            yield message


class AlertsClient(_Downstream):
    """The alerts service: reads with the service token, operator actions with the operator's own
    token (the alerts service checks it again)."""

    def __init__(
        self,
        channel: grpc.Channel,
        service_token: str,
        timeout_s: float,
        stop: threading.Event | None = None,
        live_channel: Callable[[], grpc.aio.Channel] | None = None,
    ) -> None:
        super().__init__("alerts", service_token, timeout_s, stop, live_channel)
        self._stub = alerts_pb2_grpc.AlertServiceStub(channel)

    def list(self, request: alerts_pb2.ListAlertsRequest, budget: Budget) -> alerts_pb2.ListAlertsResponse:
        return self.read(
            lambda timeout: self._stub.ListAlerts(request, timeout=timeout, metadata=self._service), budget
        )

    def rules(self, request: alerts_pb2.ListRulesRequest, budget: Budget) -> alerts_pb2.ListRulesResponse:
        return self.read(lambda timeout: self._stub.ListRules(request, timeout=timeout, metadata=self._service), budget)

    def silences(self, request: alerts_pb2.ListSilencesRequest, budget: Budget) -> alerts_pb2.ListSilencesResponse:
        return self.read(
            lambda timeout: self._stub.ListSilences(request, timeout=timeout, metadata=self._service), budget
        )

    def reload(self, operator_token: str, budget: Budget) -> alerts_pb2.ReloadRulesResponse:
        metadata = bearer(operator_token)
        request = alerts_pb2.ReloadRulesRequest()
        return self.write(lambda timeout: self._stub.ReloadRules(request, timeout=timeout, metadata=metadata), budget)

    def create_silence(
        self, request: alerts_pb2.CreateSilenceRequest, operator_token: str, budget: Budget
    ) -> alerts_pb2.CreateSilenceResponse:
        metadata = bearer(operator_token)
        return self.write(lambda timeout: self._stub.CreateSilence(request, timeout=timeout, metadata=metadata), budget)

    def expire_silence(
        self, request: alerts_pb2.ExpireSilenceRequest, operator_token: str, budget: Budget
    ) -> alerts_pb2.ExpireSilenceResponse:
        metadata = bearer(operator_token)
        return self.write(lambda timeout: self._stub.ExpireSilence(request, timeout=timeout, metadata=metadata), budget)

    async def watch(self, request: alerts_pb2.WatchAlertsRequest) -> AsyncIterator[alerts_pb2.WatchAlertsResponse]:
        stub = self.live(alerts_pb2_grpc.AlertServiceStub)
        async for message in self.relay(stub.WatchAlerts(request, metadata=self._service)):
            yield message
