"""PromQL over gRPC (InstantQuery, InstantQueries) and the rules writer (StreamMetrics with the
service token), on a real metrics server and both stores: what the alerts service relies on."""

from __future__ import annotations

import struct
import time

import grpc
import pytest

from infrawatch.metrics.v1 import metrics_pb2 as pb
from services.common.timestamps import to_timestamp
from tests.integration.conftest import SERVICE_TOKEN

AS_SERVICE = (("authorization", f"Bearer {SERVICE_TOKEN}"),)
STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]


def write(stub, metadata, name: str, at_ms: int, value: float, **labels: str) -> pb.BatchAck:
    batch = pb.MetricBatch(sequence=1)
    batch.series.add(
        labels=[pb.Label(name="__name__", value=name), *(pb.Label(name=k, value=v) for k, v in labels.items())],
        timestamps_ms=[at_ms],
        values=[value],
    )
    (ack,) = stub.StreamMetrics(iter([batch]), metadata=metadata, timeout=10)
    return ack


def test_instant_queries_answer_each_expression_on_its_own(metrics_stub, agent_token):
    now = int(time.time() * 1000)
    write(metrics_stub, (("authorization", f"Bearer {agent_token}"),), "depth", now - 1000, 7.0, queue="a")
    at = to_timestamp(now)
    one = metrics_stub.InstantQuery(pb.InstantQueryRequest(query="depth * 2", time=at), timeout=5)
    assert one.result_type == "vector" and [s.value for s in one.samples] == [14.0]
    assert {label.name for label in one.samples[0].labels} == {"host", "queue"}  # the name is dropped
    scalar = metrics_stub.InstantQuery(pb.InstantQueryRequest(query="scalar(depth) + 1", time=at), timeout=5)
    assert (scalar.result_type, scalar.scalar, scalar.time_ms) == ("scalar", 8.0, now)
    many = metrics_stub.InstantQueries(
        pb.InstantQueriesRequest(queries=["depth > 5", "depth{", "depth[5m]", "depth > 100"], time=at), timeout=5
    )
    good, broken, matrix, empty = many.results
    assert [s.value for s in good.response.samples] == [7.0]
    assert broken.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and broken.error
    assert matrix.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "range vector" in matrix.error
    assert empty.error_code == 0 and list(empty.response.samples) == []
    with pytest.raises(grpc.RpcError) as raised:
        metrics_stub.InstantQuery(pb.InstantQueryRequest(query=""), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_service_token_writes_as_the_rules_writer_and_stale_markers_end_a_series(metrics_stub, agent_token):
    now = int(time.time() * 1000)
    ack = write(metrics_stub, AS_SERVICE, "ALERTS", now - 2000, 1.0, alertname="X", host="h1", alertstate="firing")
    assert ack.samples_accepted == 1
    query = pb.InstantQueryRequest(query='ALERTS{alertname="X"}', time=to_timestamp(now))
    (sample,) = metrics_stub.InstantQuery(query, timeout=5).samples
    assert {label.name: label.value for label in sample.labels}["host"] == "h1"  # kept as written
    write(metrics_stub, AS_SERVICE, "ALERTS", now - 1000, STALE, alertname="X", host="h1", alertstate="firing")
    assert list(metrics_stub.InstantQuery(query, timeout=5).samples) == []
    # An agent cannot write into what the rules wrote, even with its own host label.
    own_host = {"alertname": "Y", "alertstate": "firing", "host": "metrics-test-host"}
    assert write(metrics_stub, AS_SERVICE, "ALERTS", now - 500, 1.0, **own_host).samples_accepted == 1
    refused = write(metrics_stub, (("authorization", f"Bearer {agent_token}"),), "ALERTS", now, 1.0, **own_host)
    assert refused.samples_accepted == 0
    assert refused.rejections[0].reason == pb.REJECTION_REASON_FOREIGN_SERIES


def test_a_range_query_answers_series_per_step_and_scalars_and_names_its_mistakes(metrics_stub, agent_token):
    from google.protobuf.duration_pb2 import Duration

    now = int(time.time() * 1000) // 1000 * 1000
    agent = (("authorization", f"Bearer {agent_token}"),)
    for offset in (30_000, 20_000, 10_000):
        write(metrics_stub, agent, "jobs_done_total", now - offset, float(100 - offset // 1000), queue="q")
    request = pb.RangeQueryRequest(
        query="increase(jobs_done_total[15s])",
        start=to_timestamp(now - 20_000),
        end=to_timestamp(now),
        step=Duration(seconds=10),
    )
    answer = metrics_stub.RangeQuery(request, timeout=5)
    (series,) = answer.series
    # At `now` the window (now - 15 s, now] holds one sample: no increase, no point there.
    assert answer.result_type == "matrix" and list(series.timestamps_ms) == [now - 20_000, now - 10_000]
    scalar = metrics_stub.RangeQuery(
        pb.RangeQueryRequest(
            query="time()", start=to_timestamp(now - 10_000), end=to_timestamp(now), step=Duration(seconds=10)
        ),
        timeout=5,
    )
    assert scalar.result_type == "scalar" and list(scalar.series[0].values) == [(now - 10_000) / 1000, now / 1000]
    with pytest.raises(grpc.RpcError) as raised:
        metrics_stub.RangeQuery(pb.RangeQueryRequest(query="rate(jobs_done_total[5m]"), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "parenthesis" in raised.value.details()
