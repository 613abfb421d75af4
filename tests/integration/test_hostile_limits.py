"""Hostile input of the 'safe to expose' review, reproduced over real gRPC on both stores: a
backtracking regular expression (finding 1), limits that failed late or wrongly (finding 8) and
wrong status codes (finding 9)."""

from __future__ import annotations

import dataclasses
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infrawatch.agents.v1 import agents_pb2
from infrawatch.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2 as pb
from infrawatch.metrics.v1 import metrics_pb2_grpc
from services.common.timestamps import to_timestamp
from tests.integration.conftest import ENROLL, TEST_METRICS_CONFIG, running_gateway, running_metrics

EVIL = '{tag=~"(a+)+b"}'


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details()


def ingest(stub, token: str, *series: pb.SeriesSamples) -> pb.BatchAck:
    (ack,) = stub.StreamMetrics(
        iter([pb.MetricBatch(sequence=1, series=list(series))]),
        metadata=(("authorization", f"Bearer {token}"),),
        timeout=60,
    )
    return ack


def labelled(name: str, **labels: str) -> list[pb.Label]:
    return [pb.Label(name="__name__", value=name), *(pb.Label(name=k, value=v) for k, v in labels.items())]


def test_a_backtracking_pattern_answers_at_once_and_health_keeps_answering(metrics_harness, metrics_stub, agent_token):
    """With Python's `re`, 30 a's and `(a+)+b` took 40 s per label value; the 5 s deadlines
    below would expire. RE2 matches in linear time."""
    now = metrics_harness.clock()
    ack = ingest(
        metrics_stub, agent_token, pb.SeriesSamples(labels=labelled("m", tag="a" * 30), start_ms=now, values=[1])
    )
    assert ack.samples_accepted == 1
    assert (
        list(metrics_stub.QueryRange(pb.QueryRangeRequest(selector=pb.Selector(selector=EVIL)), timeout=5).series) == []
    )
    assert (
        list(metrics_stub.LatestValues(pb.LatestValuesRequest(selector=pb.Selector(selector=EVIL)), timeout=5).samples)
        == []
    )
    watch = metrics_stub.WatchMetrics(pb.WatchMetricsRequest(selector=pb.Selector(selector=EVIL)), timeout=5)
    ingest(
        metrics_stub, agent_token, pb.SeriesSamples(labels=labelled("m", tag="a" * 30), start_ms=now + 1, values=[2])
    )
    with grpc.insecure_channel(metrics_harness.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert code_of(lambda: next(watch))[0] == grpc.StatusCode.DEADLINE_EXCEEDED  # nothing matched, nothing hung


def test_a_megabyte_selector_is_refused_briefly_and_never_echoed_into_the_log(metrics_stub, caplog):
    caplog.set_level(logging.DEBUG)
    huge = "x{" + "a" * (1024 * 1024) + "}"
    code, details = code_of(
        lambda: metrics_stub.QueryRange(pb.QueryRangeRequest(selector=pb.Selector(selector=huge)), timeout=5)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < 500
    assert all(len(record.getMessage()) + len(str(getattr(record, "fields", ""))) < 5000 for record in caplog.records)


@pytest.mark.parametrize("memory", [2**63, 2**64 - 1])
def test_inventory_numbers_beyond_the_columns_are_invalid_not_internal(agents_stub, memory: int):
    inventory = agents_pb2.Inventory(memory_total_bytes=memory)
    request = agents_pb2.RegisterAgentRequest(hostname="big-iron", inventory=inventory)
    code, details = code_of(lambda: agents_stub.RegisterAgent(request, metadata=ENROLL, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "memory_total_bytes" in details
    registered = agents_stub.RegisterAgent(agents_pb2.RegisterAgentRequest(hostname="big-iron"), metadata=ENROLL)
    beat = agents_pb2.HeartbeatRequest(agent_id=registered.agent_id, inventory=inventory)
    metadata = (("authorization", f"Bearer {registered.agent_token}"),)
    assert code_of(lambda: agents_stub.Heartbeat(beat, metadata=metadata, timeout=5))[0] == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_a_reply_beyond_grpcs_default_4_mb_passes_through_the_gateway(metrics_engine, agents_address, agent_token):
    """gRPC clients refuse replies over 4 MB unless told otherwise: the gateway's channels accept
    what the gateway itself may send (INFRAWATCH_MAX_MESSAGE_BYTES)."""
    limit = 16 * 1024 * 1024
    config = dataclasses.replace(TEST_METRICS_CONFIG, max_query_points=1_000_000)
    points, per_batch = 400_000, 50_000
    with running_metrics(metrics_engine, agents_address, config, max_message_bytes=limit) as metrics:
        stub = metrics_pb2_grpc.MetricsServiceStub(grpc.insecure_channel(metrics.address))
        start = metrics.clock() - points * 100 - 60_000
        for first in range(0, points, per_batch):
            ingest(
                stub,
                agent_token,
                pb.SeriesSamples(
                    labels=labelled("dense"),
                    start_ms=start + first * 100,
                    interval_ms=100,
                    values=[float(i) for i in range(first, first + per_batch)],
                ),
            )
        query = pb.QueryRangeRequest(
            selector=pb.Selector(selector="dense"), start=to_timestamp(start), end=to_timestamp(metrics.clock())
        )
        assert query.ByteSize() < 100
        with (
            running_gateway(agents_address, metrics.address, max_message_bytes=limit) as gateway,
            grpc.insecure_channel(gateway, options=[("grpc.max_receive_message_length", limit)]) as channel,
        ):
            reply = gateway_pb2_grpc.OperatorServiceStub(channel).QueryMetrics(
                gateway_pb2.QueryMetricsRequest(query=query), timeout=30
            )
    assert reply.ByteSize() > 4 * 1024 * 1024
    (series,) = reply.result.series
    assert len(series.values) == points and series.values[-1] == points - 1


def test_a_raw_query_beyond_the_point_limit_is_refused_before_a_sample_is_read(
    metrics_harness, metrics_stub, agent_token, monkeypatch
):
    """Issue 14: an 8-million-point request grew the server by 650 MB before it was refused."""
    limit = metrics_harness.app.servicer._queries.max_points
    start = metrics_harness.clock() - (limit + 20_000) * 1000 - 60_000
    ingest(
        metrics_stub,
        agent_token,
        pb.SeriesSamples(
            labels=labelled("dense_raw"), start_ms=start, interval_ms=1000, values=[1.0] * (limit + 20_000)
        ),
    )

    def must_not_load(*args, **kwargs):
        raise AssertionError("samples were loaded for a query the chunk counts already refuse")

    from services.metrics.storage.postgres import samples as postgres_store
    from services.metrics.storage.sqlite import samples as sqlite_store

    monkeypatch.setattr(postgres_store, "decode_rows", must_not_load)
    monkeypatch.setattr(sqlite_store, "decode_rows", must_not_load)
    now = to_timestamp(metrics_harness.clock())
    request = pb.QueryRangeRequest(selector=pb.Selector(selector="dense_raw"), start=to_timestamp(start), end=now)
    code, details = code_of(lambda: metrics_stub.QueryRange(request, timeout=30))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "would return at least" in details and "INFRAWATCH_MAX_QUERY_POINTS" in details
