"""Gateway composition on fake stubs: partial results, error translation, deadlines, fan-out, auth."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from infrawatch.agents.v1 import agents_pb2
from infrawatch.gateway.v1 import gateway_pb2 as pb
from infrawatch.metrics.v1 import metrics_pb2
from services.common.credentials import Credentials
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from services.gateway import service
from services.gateway.clients import DEADLINE_MARGIN_S, Budget, translate
from services.gateway.service import AgentRef, GatewayContext

NOW_MS = 1_700_000_000_000


def agent(n: int, status: int = agents_pb2.AGENT_STATUS_ONLINE, seen_ms: int = NOW_MS) -> agents_pb2.Agent:
    message = agents_pb2.Agent(agent_id=f"id-{n}", hostname=f"host-{n}", status=status)
    message.last_heartbeat_at.FromMilliseconds(seen_ms)
    return message


def sample(host: str, name: str, value: float, t: int = NOW_MS) -> metrics_pb2.LatestSample:
    labels = [metrics_pb2.Label(name="__name__", value=name), metrics_pb2.Label(name="host", value=host)]
    return metrics_pb2.LatestSample(labels=labels, timestamp_ms=t, value=value)


class FakeAgents:
    def __init__(self, agents: list[agents_pb2.Agent]) -> None:
        self.agents = {a.agent_id: a for a in agents}
        self.budgets: list[Budget] = []
        self.deregistered: list[tuple[str, str]] = []
        self.approved: list[tuple[str, str]] = []
        self.credential_calls: list[tuple[str, str]] = []
        self.before_list = lambda: None

    def get(self, budget: Budget, agent_id: str = "", hostname: str = "") -> agents_pb2.Agent:
        self.budgets.append(budget)
        for a in self.agents.values():
            if a.agent_id == agent_id or (not agent_id and a.hostname == hostname):
                return a
        raise NotFound(f"agent {agent_id or hostname} is not registered")

    def list(self, request: agents_pb2.ListAgentsRequest, budget: Budget) -> agents_pb2.ListAgentsResponse:
        self.before_list()
        wanted = set(request.statuses) or {s for s in service.ALL_STATUSES if s != agents_pb2.AGENT_STATUS_DEREGISTERED}
        found = [a for a in self.agents.values() if a.status in wanted]
        if request.order == agents_pb2.AGENT_ORDER_NEWEST_HEARTBEAT_FIRST:
            found.sort(key=lambda a: -a.last_heartbeat_at.ToMilliseconds())
            found = found[: request.page_size or 100]
        return agents_pb2.ListAgentsResponse(agents=found)

    def count(self, budget: Budget) -> dict[int, int]:
        counts = dict.fromkeys(service.ALL_STATUSES, 0)
        for agent in self.agents.values():
            counts[agent.status] += 1
        return counts

    def deregister(self, agent_id: str, operator_token: str, budget: Budget) -> agents_pb2.Agent:
        self.deregistered.append((agent_id, operator_token))
        return self.agents[agent_id]

    def approve(self, hostname: str, operator_token: str, budget: Budget) -> agents_pb2.Agent:
        self.approved.append((hostname, operator_token))
        return next(a for a in self.agents.values() if a.hostname == hostname)

    def remote_write_credentials(self, method: str, request: Any, operator_token: str, budget: Budget) -> Any:
        self.credential_calls.append((method, operator_token))
        return agents_pb2.ListRemoteWriteCredentialsResponse()


class FakeMetrics:
    def __init__(self, samples: list[metrics_pb2.LatestSample]) -> None:
        self.samples = samples
        self.down = False
        self.selectors: list[str] = []
        self.queries: list[metrics_pb2.QueryRangeRequest] = []
        self.started = threading.Event()

    def latest(
        self, selector: str, budget: Budget, highest: int = 0, since_ms: int = 0
    ) -> list[metrics_pb2.LatestSample]:
        """As the metrics service answers: `highest` ranks, `since_ms` drops older samples."""
        self.started.set()
        self.selectors.append(selector)
        if self.down:
            raise Unavailable("metrics service unavailable (UNAVAILABLE)")
        found = [s for s in self.samples if s.timestamp_ms >= since_ms]
        if "{" not in selector:  # a bare metric name selects that metric's series only
            found = [s for s in found if {lb.name: lb.value for lb in s.labels}.get("__name__") == selector]
        if highest:
            found = sorted(found, key=lambda s: -s.value)[:highest]
        return found

    def query(self, request: metrics_pb2.QueryRangeRequest, budget: Budget) -> metrics_pb2.QueryRangeResponse:
        if self.down:
            raise Unavailable("metrics service unavailable (UNAVAILABLE)")
        self.queries.append(request)
        return metrics_pb2.QueryRangeResponse(series=[metrics_pb2.SeriesPoints(values=[1.0])])

    def promql(self, request: metrics_pb2.RangeQueryRequest, budget: Budget) -> metrics_pb2.RangeQueryResponse:
        if self.down:
            raise Unavailable("metrics service unavailable (UNAVAILABLE)")
        self.promql_asked = request.query
        return metrics_pb2.RangeQueryResponse(result_type="matrix")

    def metric_names(self, budget: Budget) -> metrics_pb2.ListMetricNamesResponse:
        return metrics_pb2.ListMetricNamesResponse(metrics=[metrics_pb2.MetricMetadata(name="up")])

    def watch(self, selector):
        raise AssertionError("not used here")


@pytest.fixture
def agents():
    return FakeAgents(
        [
            agent(1),
            agent(2, agents_pb2.AGENT_STATUS_OFFLINE, NOW_MS - 600_000),
            agent(3, agents_pb2.AGENT_STATUS_STALE, NOW_MS - 30_000),
            agent(4, agents_pb2.AGENT_STATUS_DEREGISTERED),
        ]
    )


@pytest.fixture
def metrics():
    return FakeMetrics(
        [
            sample("host-1", "cpu_usage_percent", 12.0),
            sample("host-2", "cpu_usage_percent", 97.0, NOW_MS - 600_000),
            sample("host-3", "cpu_usage_percent", 55.0),
            sample("host-1", "load1", 0.5),
        ]
    )


@pytest.fixture
def ctx(agents, metrics):
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield GatewayContext(
            agents=agents,
            metrics=metrics,
            fan_out=pool,
            credentials=Credentials(operator_token="op-secret"),
            now_ms=lambda: NOW_MS,
        )


def test_overview_counts_every_status_lists_the_recently_down_and_ranks_hosts(ctx):
    overview = service.fleet_overview(ctx, "", "", 2, 0, Budget())
    assert {c.status: c.count for c in overview.counts} == {
        agents_pb2.AGENT_STATUS_ONLINE: 1,
        agents_pb2.AGENT_STATUS_STALE: 1,
        agents_pb2.AGENT_STATUS_OFFLINE: 1,
        agents_pb2.AGENT_STATUS_DEREGISTERED: 1,
    }
    assert [v.agent.hostname for v in overview.recently_down] == ["host-3", "host-2"]
    before_it_went = {m.name: m.value for m in overview.recently_down[1].latest}
    assert before_it_went == {"cpu_usage_percent": 97.0}
    # Busiest *now*: not the OFFLINE host by its old value, nor the STALE one.
    assert [(h.hostname, h.value) for h in overview.top_hosts] == [("host-1", 12.0)]
    assert overview.metrics == pb.AVAILABILITY_AVAILABLE


def test_hosts_known_only_through_prometheus_are_listed_by_instance_and_job_down_first(ctx, metrics):
    def up(instance: str, job: str, value: float) -> metrics_pb2.LatestSample:
        labels = [
            metrics_pb2.Label(name=k, value=v) for k, v in (("__name__", "up"), ("instance", instance), ("job", job))
        ]
        return metrics_pb2.LatestSample(labels=labels, timestamp_ms=NOW_MS - 5_000, value=value)

    metrics.samples = [up("web-1:9100", "node", 1.0), up("db-1:9100", "node", 0.0), up("web-2:9100", "node", 1.0)]
    overview = service.fleet_overview(ctx, "", "", 0, 0, Budget())
    assert [(t.instance, t.job, t.up) for t in overview.scrape_targets] == [
        ("db-1:9100", "node", False),
        ("web-1:9100", "node", True),
        ("web-2:9100", "node", True),
    ]
    assert "up" in metrics.selectors


def test_overview_without_metrics_is_a_partial_answer(ctx, metrics):
    metrics.down = True
    overview = service.fleet_overview(ctx, "", "", 0, 0, Budget())
    assert overview.metrics == pb.AVAILABILITY_UNAVAILABLE
    assert sum(c.count for c in overview.counts) == 4
    assert list(overview.top_hosts) == []
    assert [v.metrics for v in overview.recently_down] == [pb.AVAILABILITY_UNAVAILABLE] * 2


def test_overview_asks_metrics_while_it_lists_agents(ctx, agents, metrics):
    agents.before_list = lambda: metrics.started.wait(2) or pytest.fail("metrics was not asked concurrently")
    service.fleet_overview(ctx, "", "", 0, 0, Budget())


def test_get_agent_joins_latest_key_metrics(ctx):
    view = service.get_agent(ctx, "", AgentRef(agent_id="id-1"), Budget())
    assert view.agent.hostname == "host-1"
    assert {m.name: m.value for m in view.latest} == {"cpu_usage_percent": 12.0, "load1": 0.5}


def test_get_agent_still_answers_with_inventory_when_metrics_is_down(ctx, metrics):
    metrics.down = True
    for ref in (AgentRef(agent_id="id-1"), AgentRef(hostname="host-1")):
        view = service.get_agent(ctx, "", ref, Budget())
        assert view.agent.agent_id == "id-1"
        assert view.metrics == pb.AVAILABILITY_UNAVAILABLE


def test_agent_ref_must_name_the_agent(ctx):
    with pytest.raises(InvalidArgument, match=r"agent_id or agent\.hostname"):
        service.get_agent(ctx, "", AgentRef(), Budget())


def test_query_agent_metrics_targets_the_host_and_ends_at_its_last_heartbeat(ctx, metrics):
    request = pb.QueryAgentMetricsRequest(metric="cpu_usage_percent", label_filter='mode="user"')
    found, series = service.query_agent_metrics(ctx, "", AgentRef(hostname="host-2"), request, Budget())
    sent = metrics.queries[0]
    assert found.agent_id == "id-2" and len(series) == 1
    assert sent.selector.selector == 'cpu_usage_percent{host="host-2", mode="user"}'
    assert sent.end.ToMilliseconds() == NOW_MS - 600_000
    assert sent.start.ToMilliseconds() == NOW_MS - 600_000 - 3_600_000


def test_query_that_is_only_metrics_fails_when_metrics_is_down(ctx, metrics):
    metrics.down = True
    with pytest.raises(Unavailable, match="metrics"):
        service.query_metrics(ctx, "", metrics_pb2.QueryRangeRequest(), Budget())


def test_promql_and_metric_names_are_relayed_to_metrics_and_fail_when_it_is_down(ctx, metrics):
    request = metrics_pb2.RangeQueryRequest(query="rate(cpu_seconds_total[5m])")
    assert service.query_promql(ctx, "", request, Budget()).result_type == "matrix"
    assert metrics.promql_asked == "rate(cpu_seconds_total[5m])"
    assert [m.name for m in service.list_metric_names(ctx, "", Budget()).metrics] == ["up"]
    metrics.down = True
    with pytest.raises(Unavailable, match="metrics"):
        service.query_promql(ctx, "", request, Budget())


def test_deregister_needs_the_operator_token(ctx, agents):
    with pytest.raises(Unauthenticated):
        service.deregister_agent(ctx, "", AgentRef(agent_id="id-1"), Budget())
    with pytest.raises(Unauthenticated):
        service.deregister_agent(ctx, "wrong", AgentRef(agent_id="id-1"), Budget())
    service.deregister_agent(ctx, "op-secret", AgentRef(hostname="host-1"), Budget())
    assert agents.deregistered == [("id-1", "op-secret")]


def test_approving_a_host_needs_the_operator_token_and_passes_it_on(ctx, agents):
    with pytest.raises(Unauthenticated):
        service.approve_agent(ctx, "wrong", AgentRef(agent_id="id-1"), Budget())
    service.approve_agent(ctx, "op-secret", AgentRef(agent_id="id-1"), Budget())
    assert agents.approved == [("host-1", "op-secret")]


def test_operator_actions_are_disabled_without_a_configured_token(agents, metrics):
    ctx = GatewayContext(agents=agents, metrics=metrics, fan_out=ThreadPoolExecutor(1))
    with pytest.raises(FailedPrecondition, match="INFRAWATCH_OPERATOR_TOKEN"):
        service.deregister_agent(ctx, "anything", AgentRef(agent_id="id-1"), Budget())


def test_protected_reads_need_the_operator_token(agents, metrics):
    ctx = GatewayContext(
        agents=agents,
        metrics=metrics,
        fan_out=ThreadPoolExecutor(1),
        credentials=Credentials(operator_token="op", protect_reads=True),
    )
    with pytest.raises(Unauthenticated):
        service.get_agent(ctx, "", AgentRef(agent_id="id-1"), Budget())
    assert service.get_agent(ctx, "op", AgentRef(agent_id="id-1"), Budget()).agent.agent_id == "id-1"


def test_the_callers_deadline_bounds_every_downstream_call(ctx, agents):
    service.get_agent(ctx, "", AgentRef(agent_id="id-1"), Budget(remaining_s=0.8))
    assert agents.budgets[0].timeout(5.0) == pytest.approx(0.8 - DEADLINE_MARGIN_S)
    assert Budget().timeout(5.0) == 5.0
    with pytest.raises(Unavailable, match="deadline"):
        Budget(remaining_s=0.01).timeout(5.0)


class FakeRpcError(grpc.RpcError, grpc.Call):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details

    def initial_metadata(self):
        return ()

    def trailing_metadata(self):
        return ()

    def is_active(self):
        return False

    def time_remaining(self):
        return None

    def cancel(self):
        return False

    def add_callback(self, callback):
        return False


@pytest.mark.parametrize(
    ("code", "error", "message"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFound, "agent x is not registered"),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument, "selector: missing '}'"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted, "limit"),
        (grpc.StatusCode.UNAVAILABLE, Unavailable, "metrics service unavailable (UNAVAILABLE)"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, Unavailable, "metrics service unavailable (DEADLINE_EXCEEDED)"),
        (grpc.StatusCode.INTERNAL, Unavailable, "metrics service unavailable (INTERNAL)"),
    ],
)
def test_downstream_failures_are_translated_not_leaked(code, error, message):
    translated = translate(FakeRpcError(code, message if error is not Unavailable else "stack trace here"), "metrics")
    assert type(translated) is error
    assert str(translated) == message


def test_a_relayed_streams_error_keeps_its_code_and_message():
    """Found by the hostile-input suite: an asyncio call's INVALID_ARGUMENT became UNAVAILABLE."""
    from grpc.aio import AioRpcError, Metadata

    error = AioRpcError(grpc.StatusCode.INVALID_ARGUMENT, Metadata(), Metadata(), details="selector: missing '}'")
    translated = translate(error, "alerts")
    assert isinstance(translated, InvalidArgument) and str(translated) == "selector: missing '}'"
