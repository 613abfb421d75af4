"""The gateway over real gRPC, composing real in-process agents and metrics servers."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import pytest

from infrawatch.agents.v1 import agents_pb2
from infrawatch.gateway.v1 import gateway_pb2 as pb
from infrawatch.metrics.v1 import metrics_pb2
from tests.integration.conftest import ENROLL, OPERATOR_TOKEN


@pytest.fixture
def fleet(agents_stub, metrics_stub, metrics_harness):
    """Two registered hosts, each with two CPU and load samples."""
    now = metrics_harness.clock()
    registered = {}
    for hostname, cpu in (("web-1", 20.0), ("db-1", 91.0)):
        reply = agents_stub.RegisterAgent(
            agents_pb2.RegisterAgentRequest(hostname=hostname, labels={"env": "prod"}), metadata=ENROLL
        )
        registered[hostname] = reply
        batch = metrics_pb2.MetricBatch(
            sequence=1,
            series=[
                metrics_pb2.SeriesSamples(
                    labels=[
                        metrics_pb2.Label(name="__name__", value=name),
                        metrics_pb2.Label(name="host", value=hostname),
                    ],
                    timestamps_ms=[now - 20_000, now - 10_000],
                    values=[value - 1, value],
                )
                for name, value in (("cpu_usage_percent", cpu), ("load1", cpu / 10))
            ],
        )
        metadata = (("authorization", f"Bearer {reply.agent_token}"),)
        list(metrics_stub.StreamMetrics(iter([batch]), metadata=metadata))
    return registered


def by_ref(**ref):
    return pb.AgentRef(**ref)


def test_get_agent_by_hostname_joins_inventory_and_latest_metrics(gateway_stub, fleet):
    view = gateway_stub.GetAgent(pb.GetAgentRequest(agent=by_ref(hostname="db-1")), timeout=5).agent
    assert view.agent.agent_id == fleet["db-1"].agent_id
    assert view.agent.status == agents_pb2.AGENT_STATUS_ONLINE
    assert {m.name: m.value for m in view.latest} == {"cpu_usage_percent": 91.0, "load1": 9.1}
    assert view.metrics == pb.AVAILABILITY_AVAILABLE


def test_list_agents_filters_and_pages_with_metrics(gateway_stub, fleet):
    first = gateway_stub.ListAgents(pb.ListAgentsRequest(label_selector={"env": "prod"}, page_size=1), timeout=5)
    second = gateway_stub.ListAgents(pb.ListAgentsRequest(page_size=1, page_token=first.next_page_token), timeout=5)
    assert [v.agent.hostname for v in (*first.agents, *second.agents)] == ["db-1", "web-1"]
    assert {m.name for m in second.agents[0].latest} == {"cpu_usage_percent", "load1"}


def test_fleet_overview_counts_and_ranks(gateway_stub, fleet):
    overview = gateway_stub.GetFleetOverview(pb.GetFleetOverviewRequest(top_n=1), timeout=5)
    counts = {c.status: c.count for c in overview.counts}
    assert counts[agents_pb2.AGENT_STATUS_ONLINE] == 2
    assert [(h.hostname, h.value) for h in overview.top_hosts] == [("db-1", 91.0)]


def test_query_agent_metrics_and_pass_through_query(gateway_stub, fleet, metrics_harness):
    now = metrics_harness.clock()
    request = pb.QueryAgentMetricsRequest(agent=by_ref(hostname="web-1"), metric="cpu_usage_percent")
    request.start.FromMilliseconds(now - 60_000)
    request.end.FromMilliseconds(now)
    reply = gateway_stub.QueryAgentMetrics(request, timeout=5)
    assert [list(s.values) for s in reply.series] == [[19.0, 20.0]]
    query = metrics_pb2.QueryRangeRequest(
        selector=metrics_pb2.Selector(selector="cpu_usage_percent"),
        aggregation=metrics_pb2.AGGREGATION_MAX,
        group_by=["host"],
    )
    query.start.FromMilliseconds(now - 60_000)
    query.end.FromMilliseconds(now)
    query.step.FromSeconds(60)
    result = gateway_stub.QueryMetrics(pb.QueryMetricsRequest(query=query), timeout=5).result
    assert {s.labels[0].value: list(s.values) for s in result.series} == {"db-1": [91.0], "web-1": [20.0]}


def test_errors_come_back_with_clear_codes(gateway_stub, fleet):
    def code(call):
        with pytest.raises(grpc.RpcError) as info:
            call()
        return info.value.code(), info.value.details()

    assert code(lambda: gateway_stub.GetAgent(pb.GetAgentRequest(agent=by_ref(hostname="nope")), timeout=5))[0] == (
        grpc.StatusCode.NOT_FOUND
    )
    assert code(lambda: gateway_stub.GetAgent(pb.GetAgentRequest(), timeout=5))[0] == grpc.StatusCode.INVALID_ARGUMENT
    bad = pb.QueryMetricsRequest(query=metrics_pb2.QueryRangeRequest(selector=metrics_pb2.Selector(selector="x{")))
    status, details = code(lambda: gateway_stub.QueryMetrics(bad, timeout=5))
    assert status == grpc.StatusCode.INVALID_ARGUMENT and "selector" in details


def test_deregister_needs_the_operator_token(gateway_stub, fleet):
    request = pb.DeregisterAgentRequest(agent=by_ref(hostname="web-1"))
    with pytest.raises(grpc.RpcError) as info:
        gateway_stub.DeregisterAgent(request, metadata=(("authorization", "Bearer wrong"),), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    retired = gateway_stub.DeregisterAgent(
        request, metadata=(("authorization", f"Bearer {OPERATOR_TOKEN}"),), timeout=5
    )
    assert retired.agent.status == agents_pb2.AGENT_STATUS_DEREGISTERED


def test_when_metrics_is_down_inventory_still_answers_and_metrics_queries_say_unavailable(
    gateway_stub, fleet, metrics_harness
):
    metrics_harness.server.stop(0)
    view = gateway_stub.GetAgent(pb.GetAgentRequest(agent=by_ref(hostname="db-1")), timeout=5).agent
    assert view.agent.hostname == "db-1"
    assert view.metrics == pb.AVAILABILITY_UNAVAILABLE
    overview = gateway_stub.GetFleetOverview(pb.GetFleetOverviewRequest(), timeout=5)
    assert overview.metrics == pb.AVAILABILITY_UNAVAILABLE
    with pytest.raises(grpc.RpcError) as info:
        gateway_stub.QueryAgentMetrics(
            pb.QueryAgentMetricsRequest(agent=by_ref(hostname="db-1"), metric="cpu_usage_percent"), timeout=5
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "metrics service unavailable" in info.value.details()


def test_watch_agent_relays_status_then_live_samples_then_status_changes(
    gateway_stub, fleet, metrics_stub, agents_stub, metrics_harness
):
    events: queue.Queue = queue.Queue()
    call = gateway_stub.WatchAgent(pb.WatchAgentRequest(agent=by_ref(hostname="web-1")))

    def consume():
        try:
            for message in call:
                events.put(message)
        except grpc.RpcError:
            pass

    threading.Thread(target=consume, daemon=True).start()
    first = events.get(timeout=5)
    assert first.status.status == agents_pb2.AGENT_STATUS_ONLINE
    # The gateway subscribes to the host's samples after sending the status: the metrics service
    # holding the subscription is the signal that no sample can be missed now.
    deadline = time.monotonic() + 10
    while metrics_harness.app.hub.subscriber_count() < 1:
        assert time.monotonic() < deadline, "the gateway never subscribed to the host's samples"
        time.sleep(0.01)
    now = metrics_harness.clock()
    batch = metrics_pb2.MetricBatch(
        sequence=2,
        series=[
            metrics_pb2.SeriesSamples(
                labels=[
                    metrics_pb2.Label(name="__name__", value="cpu_usage_percent"),
                    metrics_pb2.Label(name="host", value="web-1"),
                ],
                timestamps_ms=[now],
                values=[33.0],
            )
        ],
    )
    token = fleet["web-1"].agent_token
    list(metrics_stub.StreamMetrics(iter([batch]), metadata=(("authorization", f"Bearer {token}"),)))
    samples = events.get(timeout=2)
    assert list(samples.samples.series[0].values) == [33.0]
    agents_stub.DeregisterAgent(
        agents_pb2.DeregisterAgentRequest(agent_id=fleet["web-1"].agent_id),
        metadata=(("authorization", f"Bearer {token}"),),
    )
    change = events.get(timeout=3)
    call.cancel()
    assert change.status.status == agents_pb2.AGENT_STATUS_DEREGISTERED
