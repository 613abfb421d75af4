"""The metrics service over real gRPC on port 0, with the real agents service verifying tokens,
on SQLite and on PostgreSQL: exact query results, idempotence, limits, auth and watch."""

from __future__ import annotations

import math
import queue
import threading

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from infrawatch.agents.v1 import agents_pb2
from infrawatch.metrics.v1 import metrics_pb2 as pb
from services.common.timestamps import to_timestamp
from services.metrics.domain import IngestLimits, canonical
from services.metrics.storage.chunks import ChunkColumns, make_chunks
from tests.integration.conftest import ENROLL


def base_time(harness) -> int:
    return (harness.clock() // 60_000) * 60_000 - 3_600_000


def series(labels: dict[str, str], times, values, ref: int = 0) -> pb.SeriesSamples:
    return pb.SeriesSamples(
        labels=[pb.Label(name=k, value=v) for k, v in labels.items()],
        ref=ref,
        timestamps_ms=list(times),
        values=list(values),
    )


def stream(stub, token: str, *batches: pb.MetricBatch) -> list[pb.BatchAck]:
    metadata = (("authorization", f"Bearer {token}"),)
    return list(stub.StreamMetrics(iter(batches), metadata=metadata, timeout=30))


def batch(*items: pb.SeriesSamples, sequence: int = 1, metadata=()) -> pb.MetricBatch:
    return pb.MetricBatch(sequence=sequence, series=list(items), metadata=list(metadata))


def query(stub, selector: str, start: int, end: int, step_ms: int = 60_000, aggregation=0, group_by=()):
    step = Duration()
    step.FromMilliseconds(step_ms)
    return stub.QueryRange(
        pb.QueryRangeRequest(
            selector=pb.Selector(selector=selector),
            start=to_timestamp(start),
            end=to_timestamp(end),
            step=step,
            aggregation=aggregation,
            group_by=list(group_by),
        )
    )


def labels_of(points: pb.SeriesPoints) -> dict[str, str]:
    return {label.name: label.value for label in points.labels}


def same_floats(actual, expected) -> bool:
    return len(actual) == len(expected) and all(
        (math.isnan(a) and math.isnan(e)) or a == e for a, e in zip(actual, expected, strict=True)
    )


def test_raw_round_trip_keeps_exact_values_including_nan_and_infinity(metrics_harness, metrics_stub, agent_token):
    t0 = base_time(metrics_harness)
    acks = stream(
        metrics_stub,
        agent_token,
        batch(
            series({"__name__": "cpu", "node": "a"}, [t0, t0 + 10_000, t0 + 20_000], [1.5, math.nan, math.inf]),
            series({"__name__": "cpu", "node": "b"}, [t0 + 1, t0 + 7_000, t0 + 30_000], [-math.inf, 2.0, 1e-300]),
        ),
    )
    assert [(a.sequence, a.samples_accepted, a.samples_rejected) for a in acks] == [(1, 6, 0)]
    result = query(metrics_stub, "cpu", t0, t0 + 60_000)
    assert result.matched_series == 2
    by_host = {labels_of(s)["node"]: s for s in result.series}
    assert list(by_host["a"].timestamps_ms) == [t0, t0 + 10_000, t0 + 20_000]
    assert same_floats(list(by_host["a"].values), [1.5, math.nan, math.inf])
    assert list(by_host["b"].timestamps_ms) == [t0 + 1, t0 + 7_000, t0 + 30_000]
    assert same_floats(list(by_host["b"].values), [-math.inf, 2.0, 1e-300])
    narrow = query(metrics_stub, 'cpu{node="b"}', t0 + 5_000, t0 + 7_000)
    assert [list(s.timestamps_ms) for s in narrow.series] == [[t0 + 7_000]]


def send_two_hosts(stub, token, t0):
    """host a (role db): k at t0+10k s; host b (role web): 100+k at t0+10k s+1s; k = 0..11, in 3 batches
    so that some chunks fit in one 60 s bucket and one straddles two."""
    acks = []
    for sequence, ks in enumerate((range(0, 4), range(4, 8), range(8, 12)), start=1):
        acks += stream(
            stub,
            token,
            batch(
                series(
                    {"__name__": "load", "node": "a", "role": "db"},
                    [t0 + k * 10_000 for k in ks],
                    [float(k) for k in ks],
                ),
                series(
                    {"__name__": "load", "node": "b", "role": "web"},
                    [t0 + k * 10_000 + 1_000 for k in ks],
                    [100.0 + k for k in ks],
                ),
                sequence=sequence,
            ),
        )
    assert sum(a.samples_accepted for a in acks) == 24


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        (pb.AGGREGATION_AVG, [52.5, 58.5]),
        (pb.AGGREGATION_SUM, [630.0, 702.0]),
        (pb.AGGREGATION_MIN, [0.0, 6.0]),
        (pb.AGGREGATION_MAX, [105.0, 111.0]),
        (pb.AGGREGATION_COUNT, [12.0, 12.0]),
        (pb.AGGREGATION_LAST, [105.0, 111.0]),
    ],
)
def test_fleet_aggregation_is_exact(metrics_harness, metrics_stub, agent_token, aggregation, expected):
    t0 = base_time(metrics_harness)
    send_two_hosts(metrics_stub, agent_token, t0)
    result = query(metrics_stub, "load", t0, t0 + 119_999, aggregation=aggregation)
    assert len(result.series) == 1
    assert list(result.series[0].timestamps_ms) == [t0, t0 + 60_000]
    assert list(result.series[0].values) == expected
    assert list(result.series[0].labels) == []


def test_group_by_splits_the_aggregate_per_label_value(metrics_harness, metrics_stub, agent_token):
    t0 = base_time(metrics_harness)
    send_two_hosts(metrics_stub, agent_token, t0)
    result = query(metrics_stub, "load", t0, t0 + 119_999, aggregation=pb.AGGREGATION_SUM, group_by=["role"])
    assert {labels_of(s)["role"]: list(s.values) for s in result.series} == {
        "db": [15.0, 51.0],
        "web": [615.0, 651.0],
    }


def test_rate_handles_a_counter_reset(metrics_harness, metrics_stub, agent_token):
    t0 = base_time(metrics_harness)
    values = [0, 10, 20, 30, 40, 50, 5, 15, 25, 35, 45, 55]
    counter = pb.MetricMetadata(name="requests_total", type=pb.METRIC_TYPE_COUNTER, unit="requests")
    stream(
        metrics_stub,
        agent_token,
        batch(
            series({"__name__": "requests_total", "node": "a"}, [t0 + k * 10_000 for k in range(12)], values),
            metadata=[counter],
        ),
    )
    result = query(metrics_stub, "requests_total", t0, t0 + 119_999, aggregation=pb.AGGREGATION_RATE)
    assert list(result.series[0].timestamps_ms) == [t0, t0 + 60_000]
    assert list(result.series[0].values) == pytest.approx([50 / 60, 55 / 60])


def test_a_resent_batch_is_stored_once(metrics_harness, metrics_stub, agent_token):
    t0 = base_time(metrics_harness)
    labels = {"__name__": "mem", "node": "a"}
    first = batch(series(labels, [t0 + k * 1000 for k in range(6)], [float(k) for k in range(6)]), sequence=7)
    overlapping = batch(
        series(labels, [t0 + k * 1000 for k in range(3, 9)], [float(k) for k in range(3, 9)]), sequence=8
    )
    acks = stream(metrics_stub, agent_token, first, first, overlapping)
    assert [(a.sequence, a.samples_accepted, a.samples_duplicate) for a in acks] == [(7, 6, 0), (7, 0, 6), (8, 3, 3)]
    result = query(metrics_stub, "mem", t0, t0 + 60_000)
    assert list(result.series[0].timestamps_ms) == [t0 + k * 1000 for k in range(9)]
    assert list(result.series[0].values) == [float(k) for k in range(9)]


def test_an_older_sample_that_was_never_stored_is_rejected_as_out_of_order(metrics_harness, metrics_stub, agent_token):
    t0 = base_time(metrics_harness)
    labels = {"__name__": "mem", "node": "a"}
    acks = stream(
        metrics_stub,
        agent_token,
        batch(series(labels, [t0, t0 + 10_000], [1.0, 2.0])),
        batch(series(labels, [t0 + 5_000, t0 + 20_000], [9.0, 3.0]), sequence=2),
    )
    assert (acks[1].samples_accepted, acks[1].samples_rejected) == (1, 1)
    assert acks[1].rejections[0].reason == pb.REJECTION_REASON_OUT_OF_ORDER


def test_label_set_references_are_resolved_per_stream(metrics_harness, metrics_stub, agent_token):
    t0 = base_time(metrics_harness)
    acks = stream(
        metrics_stub,
        agent_token,
        batch(series({"__name__": "disk", "dev": "sda"}, [t0], [1.0], ref=5)),
        batch(pb.SeriesSamples(ref=5, timestamps_ms=[t0 + 1000], values=[2.0]), sequence=2),
        batch(pb.SeriesSamples(ref=6, timestamps_ms=[t0 + 1000], values=[2.0]), sequence=3),
    )
    assert [a.samples_accepted for a in acks] == [1, 1, 0]
    assert acks[2].rejections[0].reason == pb.REJECTION_REASON_UNKNOWN_REF
    assert list(query(metrics_stub, "disk", t0, t0 + 5000).series[0].values) == [1.0, 2.0]


def test_bad_series_are_rejected_alone_with_reasons(metrics_harness, metrics_stub, agent_token):
    now = metrics_harness.clock()
    good = series({"__name__": "ok_metric", "node": "a"}, [now - 1000], [1.0])
    acks = stream(
        metrics_stub,
        agent_token,
        batch(
            series({"__name__": "bad", "bad-label": "x"}, [now], [1.0]),
            series({"node": "nameless"}, [now], [1.0]),
            series({"__name__": "mismatch"}, [now, now + 1], [1.0]),
            series({"__name__": "future"}, [now - 1000, now + 3_600_000], [1.0, 2.0]),
            series({"__name__": "ancient"}, [now - 30 * 86_400_000, now - 2000], [1.0, 2.0]),
            good,
        ),
    )
    ack = acks[0]
    reasons = {r.series_index: (r.reason, r.samples, r.message) for r in ack.rejections}
    assert reasons[0][0] == pb.REJECTION_REASON_INVALID_LABELS and "bad-label" in reasons[0][2]
    assert reasons[1][0] == pb.REJECTION_REASON_EMPTY_METRIC_NAME
    assert reasons[2][0] == pb.REJECTION_REASON_LENGTH_MISMATCH
    assert reasons[3][:2] == (pb.REJECTION_REASON_TOO_FAR_IN_FUTURE, 1)
    assert reasons[4][:2] == (pb.REJECTION_REASON_TOO_OLD, 1)
    assert ack.samples_accepted == 3
    assert ack.samples_rejected == 1 + 1 + 2 + 1 + 1
    assert len(query(metrics_stub, "ok_metric", now - 5000, now).series) == 1


def test_series_beyond_the_batch_limit_are_rejected_and_the_rest_stored(metrics_harness, metrics_stub, agent_token):
    now = metrics_harness.clock()
    items = [series({"__name__": "wide", "i": str(i)}, [now - 1000], [float(i)]) for i in range(60)]
    ack = stream(metrics_stub, agent_token, batch(*items))[0]
    assert (ack.samples_accepted, ack.samples_rejected) == (50, 10)
    assert {r.reason for r in ack.rejections} == {pb.REJECTION_REASON_TOO_MANY_SERIES}
    assert "limit is 50" in ack.rejections[0].message


def test_cardinality_limit_per_agent_rejects_new_series_only(metrics_harness, metrics_stub, agent_token):
    now = metrics_harness.clock()
    for start in (0, 40, 80):
        items = [series({"__name__": "card", "i": str(i)}, [now - 1000], [1.0]) for i in range(start, start + 40)]
        acks = stream(metrics_stub, agent_token, batch(*items))
    assert (acks[0].samples_accepted, acks[0].samples_rejected) == (20, 20)
    assert acks[0].rejections[0].reason == pb.REJECTION_REASON_CARDINALITY_LIMIT
    assert "limit is 100" in acks[0].rejections[0].message
    again = stream(metrics_stub, agent_token, batch(series({"__name__": "card", "i": "0"}, [now], [2.0])))
    assert again[0].samples_accepted == 1


def test_a_metric_typed_differently_by_another_agent_is_a_type_conflict(
    metrics_harness, metrics_stub, agents_stub, agent_token
):
    now = metrics_harness.clock()
    as_counter = pb.MetricMetadata(name="jobs", type=pb.METRIC_TYPE_COUNTER)
    as_gauge = pb.MetricMetadata(name="jobs", type=pb.METRIC_TYPE_GAUGE)
    other = agents_stub.RegisterAgent(
        agents_pb2.RegisterAgentRequest(hostname="other-host"), metadata=ENROLL
    ).agent_token
    stream(
        metrics_stub, agent_token, batch(series({"__name__": "jobs", "node": "a"}, [now], [1.0]), metadata=[as_counter])
    )
    ack = stream(
        metrics_stub, other, batch(series({"__name__": "jobs", "node": "b"}, [now], [1.0]), metadata=[as_gauge])
    )[0]
    assert ack.samples_accepted == 0
    assert ack.rejections[0].reason == pb.REJECTION_REASON_TYPE_CONFLICT
    assert "counter" in ack.rejections[0].message


def test_stream_without_or_with_a_wrong_token_is_unauthenticated_and_stores_nothing(metrics_harness, metrics_stub):
    now = metrics_harness.clock()
    for metadata in ((), (("authorization", "Bearer iwa_forged"),)):
        with pytest.raises(grpc.RpcError) as info:
            list(metrics_stub.StreamMetrics(iter([batch(series({"__name__": "x"}, [now], [1.0]))]), metadata=metadata))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    metrics_harness.catalog.refresh(force=True)
    assert metrics_harness.catalog.series_count() == 0


def test_latest_values_series_listing_and_metric_names(metrics_harness, metrics_stub, agent_token):
    t0 = base_time(metrics_harness)
    send_two_hosts(metrics_stub, agent_token, t0)
    latest = metrics_stub.LatestValues(pb.LatestValuesRequest(selector=pb.Selector(selector='load{role=~"d.*"}')))
    assert [(labels_of(s)["node"], s.timestamp_ms, s.value) for s in latest.samples] == [("a", t0 + 110_000, 11.0)]
    first = metrics_stub.ListSeries(pb.ListSeriesRequest(page_size=1))
    second = metrics_stub.ListSeries(pb.ListSeriesRequest(page_size=1, page_token=first.next_page_token))
    hosts = [labels_of(s)["node"] for page in (first, second) for s in page.series]
    assert hosts == ["a", "b"] and second.next_page_token == ""
    names = metrics_stub.ListMetricNames(pb.ListMetricNamesRequest())
    assert [(m.name, m.type) for m in names.metrics] == [("load", pb.METRIC_TYPE_UNSPECIFIED)]
    assert list(names.label_names) == ["host", "node", "role"]  # what an editor completes; no __name__
    ranked = metrics_stub.LatestValues(pb.LatestValuesRequest(selector=pb.Selector(selector="load"), highest=1))
    assert [(labels_of(s)["node"], s.value) for s in ranked.samples] == [("b", 111.0)]  # highest first, only 1
    recent = pb.LatestValuesRequest(selector=pb.Selector(selector="load"), since_ms=t0 + 110_500)
    assert [labels_of(s)["node"] for s in metrics_stub.LatestValues(recent).samples] == ["b"]  # a's is older


def test_queries_reject_bad_selectors_and_ranges(metrics_stub):
    def code(request):
        with pytest.raises(grpc.RpcError) as info:
            metrics_stub.QueryRange(request)
        return info.value.code(), info.value.details()

    assert code(pb.QueryRangeRequest())[0] == grpc.StatusCode.INVALID_ARGUMENT
    bad = code(pb.QueryRangeRequest(selector=pb.Selector(selector='cpu{node="a"')))
    assert bad[0] == grpc.StatusCode.INVALID_ARGUMENT and "missing '}'" in bad[1]
    regex = code(pb.QueryRangeRequest(selector=pb.Selector(selector='cpu{host=~"("}')))
    assert regex[0] == grpc.StatusCode.INVALID_ARGUMENT and "regular expression" in regex[1]
    backwards = pb.QueryRangeRequest(
        selector=pb.Selector(selector="cpu"), start=to_timestamp(2000), end=to_timestamp(1000)
    )
    assert "start must not be after end" in code(backwards)[1]


def test_watch_pushes_new_samples_of_matching_series(metrics_harness, metrics_stub, agent_token):
    now = metrics_harness.clock()
    received: queue.Queue = queue.Queue()
    call = metrics_stub.WatchMetrics(pb.WatchMetricsRequest(selector=pb.Selector(selector='temp{node="a"}')))

    def consume():
        try:
            for message in call:
                received.put(message)
        except grpc.RpcError:
            pass

    threading.Thread(target=consume, daemon=True).start()
    call.initial_metadata()
    stream(
        metrics_stub,
        agent_token,
        batch(
            series({"__name__": "temp", "node": "a"}, [now - 2000, now - 1000], [20.5, 21.0]),
            series({"__name__": "temp", "node": "b"}, [now - 1000], [99.0]),
        ),
    )
    message = received.get(timeout=1.0)
    call.cancel()
    assert [labels_of(s)["node"] for s in message.series] == ["a"]
    assert list(message.series[0].timestamps_ms) == [now - 2000, now - 1000]
    assert list(message.series[0].values) == [20.5, 21.0]


def test_retention_drops_old_samples_and_keeps_recent_ones(metrics_harness):
    day = 86_400_000
    now = metrics_harness.clock()
    old, recent = canonical([("__name__", "r"), ("age", "old")]), canonical([("__name__", "r"), ("age", "new")])
    ids = metrics_harness.catalog.create("agent", [old, recent], 10)
    samples = metrics_harness.samples
    samples.append(ChunkColumns.from_chunks(make_chunks(ids[old], [now - 20 * day, now - 20 * day + 1000], [1.0, 2.0])))
    samples.append(ChunkColumns.from_chunks(make_chunks(ids[recent], [now - 1000], [3.0])))
    samples.drop_older_than(now - 15 * day)
    assert samples.raw([ids[old], ids[recent]], now - 30 * day, now) == {ids[recent]: ([now - 1000], [3.0])}


def test_compaction_merges_small_chunks_without_changing_any_answer(metrics_harness, metrics_stub, agent_token):
    window = 3_600_000
    t0 = (metrics_harness.clock() // window - 2) * window
    labels_a = {"__name__": "comp", "node": "a"}
    labels_b = {"__name__": "comp", "node": "b"}
    batches = []
    for number in range(12):
        ks = range(number * 5, number * 5 + 5)
        batches.append(
            batch(
                series(labels_a, [t0 + k * 10_000 for k in ks], [float(k) for k in ks]),
                series(labels_b, [t0 + k * 10_000 + 3 * (k % 2) for k in ks], [k * 0.5 for k in ks]),
                sequence=number,
            )
        )
    stream(metrics_stub, agent_token, *batches)
    end = t0 + 600_000

    def answers():
        raw = query(metrics_stub, "comp", t0, end)
        sums = query(metrics_stub, "comp", t0, end, step_ms=45_000, aggregation=pb.AGGREGATION_SUM, group_by=["node"])
        last = query(metrics_stub, "comp", t0, end, step_ms=120_000, aggregation=pb.AGGREGATION_LAST)
        return [
            [(labels_of(s), list(s.timestamps_ms), list(s.values)) for s in reply.series] for reply in (raw, sums, last)
        ]

    before = answers()
    samples = metrics_harness.samples
    removed = samples.compact(window, t0 - 2 * window, metrics_harness.clock() - 600_000)
    assert removed == 2 * 11
    assert answers() == before
    assert samples.compact(window, t0 - 2 * window, metrics_harness.clock() - 600_000) == 0


@pytest.mark.parametrize(
    "aggregation",
    [
        pb.AGGREGATION_AVG,
        pb.AGGREGATION_SUM,
        pb.AGGREGATION_COUNT,
        pb.AGGREGATION_MIN,
        pb.AGGREGATION_MAX,
        pb.AGGREGATION_LAST,
        pb.AGGREGATION_RATE,
    ],
)
def test_a_wide_query_split_over_connections_gives_exact_answers(
    metrics_harness, metrics_stub, agent_token, aggregation
):
    # 40 series (enough for the PostgreSQL store to split the query), values chosen so every
    # aggregate has one exact answer per bucket.
    t0 = base_time(metrics_harness)
    items = []
    data = {}
    for i in range(40):
        times = [t0 + k * 15_000 + i for k in range(8)]
        values = [float(i * 100 + k * (1 + i % 3)) for k in range(8)]
        data[i] = list(zip(times, values, strict=True))
        items.append(series({"__name__": "wide_q", "i": str(i), "parity": str(i % 2)}, times, values))
    metrics_harness.ingestor.limits = IngestLimits()
    stream(metrics_stub, agent_token, batch(*items))
    step = 60_000
    result = query(
        metrics_stub, "wide_q", t0, t0 + 2 * step - 1, step_ms=step, aggregation=aggregation, group_by=["parity"]
    )

    def expected(parity: str, bucket: int) -> float:
        chosen = [(i, t, v) for i, pts in data.items() if str(i % 2) == parity for t, v in pts]
        inside = [(i, t, v) for i, t, v in chosen if t0 + bucket * step <= t < t0 + (bucket + 1) * step]
        vs = [v for _, _, v in inside]
        if aggregation == pb.AGGREGATION_AVG:
            return sum(vs) / len(vs)
        if aggregation == pb.AGGREGATION_SUM:
            return sum(vs)
        if aggregation == pb.AGGREGATION_COUNT:
            return float(len(vs))
        if aggregation == pb.AGGREGATION_MIN:
            return min(vs)
        if aggregation == pb.AGGREGATION_MAX:
            return max(vs)
        if aggregation == pb.AGGREGATION_LAST:
            return max(inside, key=lambda x: x[1])[2]
        increase = 0.0
        for i, t, v in inside:
            previous = [pv for pt, pv in data[i] if pt < t]
            if previous:
                increase += v - previous[-1]
        return increase / (step / 1000)

    got = {labels_of(s)["parity"]: list(s.values) for s in result.series}
    assert got == {p: pytest.approx([expected(p, 0), expected(p, 1)]) for p in ("0", "1")}


def test_a_catastrophically_backtracking_pattern_is_answered_at_once(metrics_harness, metrics_stub, agent_token):
    t0 = base_time(metrics_harness)
    stream(metrics_stub, agent_token, batch(series({"__name__": "tagged", "tag": "a" * 40}, [t0], [1.0])))
    reply = metrics_stub.QueryRange(
        pb.QueryRangeRequest(selector=pb.Selector(selector='tagged{tag=~"(a+)+b"}')), timeout=5
    )
    assert reply.matched_series == 0


def test_an_unknown_matcher_type_is_invalid_argument(metrics_stub):
    request = pb.QueryRangeRequest(selector=pb.Selector(matchers=[pb.LabelMatcher(name="node", type=99, value="x")]))
    with pytest.raises(grpc.RpcError) as raised:
        metrics_stub.QueryRange(request, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "matcher type 99" in raised.value.details()


def test_an_out_of_range_timestamp_is_invalid_argument(metrics_stub):
    from google.protobuf.timestamp_pb2 import Timestamp

    request = pb.QueryRangeRequest(selector=pb.Selector(selector="anything"), start=Timestamp(seconds=2**62))
    with pytest.raises(grpc.RpcError) as raised:
        metrics_stub.QueryRange(request, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "start is not a valid timestamp" in raised.value.details()


def test_metadata_with_an_unknown_type_is_rejected_per_series_and_the_stream_goes_on(
    metrics_harness, metrics_stub, agent_token
):
    now = metrics_harness.clock()
    acks = stream(
        metrics_stub,
        agent_token,
        batch(
            series({"__name__": "odd", "node": "a"}, [now - 1000], [1.0]),
            series({"__name__": "even", "node": "a"}, [now - 1000], [2.0]),
            metadata=[pb.MetricMetadata(name="odd", type=99)],
        ),
        batch(series({"__name__": "even", "node": "a"}, [now], [3.0]), sequence=2),
    )
    assert [(a.samples_accepted, a.samples_rejected) for a in acks] == [(1, 1), (1, 0)]
    assert acks[0].rejections[0].reason == pb.REJECTION_REASON_INVALID_METADATA
    assert "type 99" in acks[0].rejections[0].message


def test_refused_metadata_declarations_are_listed_for_operators(metrics_harness, metrics_stub, agent_token):
    now = metrics_harness.clock()
    squat = pb.MetricMetadata(name="load1", type=pb.METRIC_TYPE_COUNTER)
    (ack,) = stream(
        metrics_stub, agent_token, batch(series({"__name__": "load1", "node": "a"}, [now], [1.0]), metadata=[squat])
    )
    assert ack.rejections[0].reason == pb.REJECTION_REASON_TYPE_CONFLICT
    names = metrics_stub.ListMetricNames(pb.ListMetricNamesRequest())
    (conflict,) = names.conflicts
    assert (conflict.kept.name, conflict.kept.type, conflict.refused.type) == (
        "load1",
        pb.METRIC_TYPE_GAUGE,
        pb.METRIC_TYPE_COUNTER,
    )


def test_an_agent_cannot_write_or_poison_another_hosts_series(metrics_harness, metrics_stub, agents_stub):
    from infrawatch.agents.v1 import agents_pb2

    victim = agents_stub.RegisterAgent(agents_pb2.RegisterAgentRequest(hostname="victim"), metadata=ENROLL).agent_token
    attacker = agents_stub.RegisterAgent(
        agents_pb2.RegisterAgentRequest(hostname="attacker"), metadata=ENROLL
    ).agent_token
    now = metrics_harness.clock()
    # Forged samples for the victim, a minute in the future: they land on the attacker's own host.
    (forged,) = stream(
        metrics_stub, attacker, batch(series({"__name__": "load1", "host": "victim"}, [now + 60_000], [99.0]))
    )
    assert forged.samples_accepted == 1
    (real,) = stream(metrics_stub, victim, batch(series({"__name__": "load1", "host": "victim"}, [now], [0.5])))
    assert (real.samples_accepted, real.samples_rejected) == (1, 0)
    latest = metrics_stub.LatestValues(pb.LatestValuesRequest(selector=pb.Selector(selector="load1")))
    assert sorted((labels_of(s)["host"], s.value) for s in latest.samples) == [("attacker", 99.0), ("victim", 0.5)]


def test_an_unknown_aggregation_is_invalid_argument(metrics_stub):
    """Found by the hostile-input suite: an aggregation number outside the enum was INTERNAL."""
    request = pb.QueryRangeRequest(selector=pb.Selector(selector="anything"), aggregation=29)
    with pytest.raises(grpc.RpcError) as raised:
        metrics_stub.QueryRange(request, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "aggregation 29" in raised.value.details()
