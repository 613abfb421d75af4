"""Query semantics at the edges, on both stores and before and after compaction: empty series and
groups, LAST when series tie, NaN inside a counter, and a rate bucket that `end` cuts short."""

from __future__ import annotations

import math

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from infrawatch.metrics.v1 import metrics_pb2 as pb
from services.common.timestamps import to_timestamp


def hour_ago(harness) -> int:
    return (harness.clock() // 3_600_000 - 2) * 3_600_000  # a closed, compactable hour


def send(stub, token: str, *series: pb.SeriesSamples, sequence: int = 1) -> None:
    batch = pb.MetricBatch(sequence=sequence, series=list(series))
    (ack,) = stub.StreamMetrics(iter([batch]), metadata=(("authorization", f"Bearer {token}"),), timeout=10)
    assert ack.samples_rejected == 0, ack


def samples(name: str, node: str, times: list[int], values: list[float]) -> pb.SeriesSamples:
    return pb.SeriesSamples(
        labels=[pb.Label(name="__name__", value=name), pb.Label(name="node", value=node)],
        timestamps_ms=times,
        values=values,
    )


def ask(stub, selector: str, start: int, end: int, step_ms: int = 60_000, aggregation=0, group_by=()):
    return stub.QueryRange(
        pb.QueryRangeRequest(
            selector=pb.Selector(selector=selector),
            start=to_timestamp(start),
            end=to_timestamp(end),
            step=Duration(seconds=step_ms // 1000, nanos=(step_ms % 1000) * 1_000_000),
            aggregation=aggregation,
            group_by=list(group_by),
        ),
        timeout=10,
    ).series


def compact(harness, t0: int) -> None:
    harness.samples.compact(3_600_000, t0 - 3_600_000, t0 + 3_600_000)


@pytest.mark.parametrize("compacted", [False, True], ids=["fresh", "compacted"])
def test_a_series_with_no_point_in_the_range_is_not_returned(metrics_harness, metrics_stub, agent_token, compacted):
    t0 = hour_ago(metrics_harness)
    send(metrics_stub, agent_token, samples("gap", "a", [t0, t0 + 100_000], [1.0, 2.0]))
    send(metrics_stub, agent_token, samples("gap", "a", [t0 + 200_000], [3.0]), sequence=2)
    if compacted:
        compact(metrics_harness, t0)
    inside_the_chunk = (t0 + 10_000, t0 + 90_000)
    assert list(ask(metrics_stub, "gap", *inside_the_chunk)) == []
    for aggregation in (pb.AGGREGATION_AVG, pb.AGGREGATION_LAST, pb.AGGREGATION_COUNT, pb.AGGREGATION_MAX):
        assert list(ask(metrics_stub, "gap", *inside_the_chunk, aggregation=aggregation, group_by=["node"])) == []


@pytest.mark.parametrize("compacted", [False, True], ids=["fresh", "compacted"])
def test_last_over_series_that_share_their_newest_timestamp_is_the_greatest_value(
    metrics_harness, metrics_stub, agent_token, compacted
):
    t0 = hour_ago(metrics_harness)
    for sequence, offset in ((1, 0), (2, 10_000)):  # two rounds, so compaction has chunks to merge
        send(
            metrics_stub,
            agent_token,
            samples("tied", "b", [t0 + offset], [5.0]),
            samples("tied", "a", [t0 + offset], [7.0]),
            samples("tied", "c", [t0 + offset], [math.nan]),
            samples("tied", "d", [t0 + offset], [6.0]),
            sequence=sequence,
        )
    if compacted:
        compact(metrics_harness, t0)
    (series,) = ask(metrics_stub, "tied", t0, t0 + 59_999, aggregation=pb.AGGREGATION_LAST)
    assert list(series.values) == [7.0]


@pytest.mark.parametrize("compacted", [False, True], ids=["fresh", "compacted"])
def test_a_nan_inside_a_counter_is_skipped_not_taken_for_a_reset(metrics_harness, metrics_stub, agent_token, compacted):
    t0 = hour_ago(metrics_harness)
    send(
        metrics_stub, agent_token, samples("jobs_total", "a", [t0 + i * 1000 for i in range(3)], [0.0, 10.0, math.nan])
    )
    send(metrics_stub, agent_token, samples("jobs_total", "a", [t0 + 3000, t0 + 4000], [20.0, 30.0]), sequence=2)
    if compacted:
        compact(metrics_harness, t0)
    (series,) = ask(metrics_stub, "jobs_total", t0, t0 + 59_999, aggregation=pb.AGGREGATION_RATE)
    assert list(series.values) == [pytest.approx(30 / 60)]


def test_a_rate_bucket_cut_short_by_end_is_divided_by_the_time_it_covers(metrics_harness, metrics_stub, agent_token):
    t0 = hour_ago(metrics_harness)
    send(
        metrics_stub,
        agent_token,
        samples("bytes_total", "a", [t0 + i * 1000 for i in range(30)], [10.0 * i for i in range(30)]),
    )
    full, cut = ask(metrics_stub, "bytes_total", t0, t0 + 89_999, step_ms=60_000, aggregation=pb.AGGREGATION_RATE), None
    cut = ask(metrics_stub, "bytes_total", t0, t0 + 29_000, step_ms=60_000, aggregation=pb.AGGREGATION_RATE)
    assert list(full[0].values) == [pytest.approx(290 / 60)]  # a whole bucket: the whole step
    assert list(cut[0].values) == [pytest.approx(290 / 29.001)]  # about the true 10 per second


@pytest.mark.parametrize("compacted", [False, True], ids=["fresh", "compacted"])
def test_a_rate_bucket_cut_to_one_millisecond_is_divided_by_the_span_of_its_samples_not_by_1_ms(
    metrics_harness, metrics_stub, agent_token, compacted
):
    t0 = hour_ago(metrics_harness)
    # A counter growing 150 every 15 s (10 per second); `end` falls exactly on the second bucket's
    # start, where a sample lies: that bucket covers 1 ms of the range.
    times = [t0 + i * 15_000 for i in range(9)]
    send(metrics_stub, agent_token, samples("spiky_total", "a", times, [150.0 * i for i in range(9)]))
    if compacted:
        compact(metrics_harness, t0)
    (series,) = ask(metrics_stub, "spiky_total", t0, t0 + 120_000, step_ms=60_000, aggregation=pb.AGGREGATION_RATE)
    assert list(series.timestamps_ms) == [t0, t0 + 60_000, t0 + 120_000]
    # Whole buckets: 3 and 4 increases of 150 over the 60 s step (the first has no sample before
    # it). The cut bucket: one increase of 150 over the 15 s its two samples span, the true 10 per
    # second, not 150 / 0.001 s = 150,000.
    assert list(series.values) == [pytest.approx(450 / 60), pytest.approx(600 / 60), pytest.approx(10.0)]


def test_sub_millisecond_bounds_hold_only_the_samples_inside_them(metrics_harness, metrics_stub, agent_token):
    t0 = hour_ago(metrics_harness)
    send(metrics_stub, agent_token, samples("bounded", "a", [t0, t0 + 1000, t0 + 2000], [1.0, 2.0, 3.0]))

    def raw(start: Timestamp, end: Timestamp) -> list[int]:
        reply = metrics_stub.QueryRange(
            pb.QueryRangeRequest(selector=pb.Selector(selector="bounded"), start=start, end=end), timeout=10
        )
        return [t - t0 for s in reply.series for t in s.timestamps_ms]

    def at(ms: int, nanos: int = 0) -> Timestamp:
        stamp = to_timestamp(ms)
        stamp.nanos += nanos
        return stamp

    half = 500_000  # 0.5 ms in nanoseconds
    assert raw(at(t0), at(t0 + 2000)) == [0, 1000, 2000]  # whole milliseconds: both bounds inclusive
    assert raw(at(t0, half), at(t0 + 2000)) == [1000, 2000]  # a start 0.5 ms after a sample excludes it
    assert raw(at(t0), at(t0 + 1999, half)) == [0, 1000]  # an end 0.5 ms before a sample excludes it
    assert raw(at(t0 - 1, half), at(t0 + 2000, half)) == [0, 1000, 2000]  # 0.5 ms outside: both kept
