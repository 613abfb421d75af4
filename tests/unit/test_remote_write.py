"""Remote-write decoding and the receiver on fake stores: every valid encoding gives the same
columns, hostile bodies are refused with a reason, and a sender's samples go through the agents'
ingest rules (idempotent re-sends, rejections by reason, labels kept as sent)."""

from __future__ import annotations

import math
import struct

import cramjam
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infrawatch.metrics.v1 import remote_write_pb2 as wire
from services.common.errors import InvalidArgument
from services.common.selectors import Matcher, MatchType
from services.metrics.domain import MAX_LABEL_SET_BYTES, IngestLimits, MetricType
from services.metrics.ingest.stream import Ingestor
from services.metrics.prom.remote_write import DecodeLimits, PayloadTooLarge, RemoteWriteReceiver, decode, decompress
from services.metrics.storage.catalog import SeriesCatalog
from services.metrics.watch import WatchHub
from tests.unit.fakes import FakeClock, FakeSampleStore, FakeSeriesStore

NOW = FakeClock().now


def request(*series: tuple[dict[str, str], list[tuple[int, float]]], metadata=()) -> bytes:
    return wire.PromWriteRequest(
        timeseries=[
            wire.PromTimeSeries(
                labels=[wire.PromLabel(name=k, value=v) for k, v in sorted(labels.items())],
                samples=[wire.PromSample(timestamp=t, value=v) for t, v in samples],
            )
            for labels, samples in series
        ],
        metadata=list(metadata),
    ).SerializeToString()


def standard_reading(data: bytes):
    """What the columns must say, read with the plain protobuf message."""
    message = wire.PromWriteRequest.FromString(data)
    return (
        [wire.PromLabelsOnly(labels=s.labels).SerializeToString() for s in message.timeseries],
        [len(s.samples) for s in message.timeseries],
        [sample.timestamp for s in message.timeseries for sample in s.samples],
        [sample.value for s in message.timeseries for sample in s.samples],
    )


def same_bits(left: list[float], right: list[float]) -> bool:
    return [struct.pack("<d", v) for v in left] == [struct.pack("<d", v) for v in right]


values = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1.0, 0.5])
times = st.integers(min_value=-(2**62), max_value=2**62) | st.just(0)
series_strategy = st.tuples(
    st.dictionaries(st.sampled_from(["__name__", "job", "instance", "a"]), st.text(max_size=8), min_size=0, max_size=4),
    st.lists(st.tuples(times, values), max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(series_strategy, max_size=12))
def test_the_columns_say_what_protobuf_says_for_any_request(series):
    assert_read_as_protobuf_reads(request(*series))


def assert_read_as_protobuf_reads(data: bytes) -> None:
    keys, counts, stamps, found = standard_reading(data)
    columns = decode(data)
    assert columns.keys == keys
    assert columns.sample_counts.tolist() == counts
    assert columns.timestamps.tolist() == stamps
    assert same_bits(columns.values.tolist(), found)  # bit for bit: -0.0 and every NaN payload too


current_times = st.integers(min_value=2**41, max_value=2**42 - 1)  # one varint width: the fast path
uniform_series = st.tuples(
    st.dictionaries(st.sampled_from(["__name__", "job"]), st.text(max_size=300), min_size=1, max_size=2),
    st.lists(st.tuples(current_times, values), max_size=40),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(uniform_series, max_size=8))
def test_series_of_same_sized_samples_say_what_protobuf_says_too(series):
    assert_read_as_protobuf_reads(request(*series))


def test_a_series_whose_labels_follow_its_samples_is_read_by_the_standard_parser():
    labels = wire.PromLabelsOnly(labels=[wire.PromLabel(name="__name__", value="up")]).SerializeToString()
    sample = wire.PromTimeSeries(samples=[wire.PromSample(timestamp=5, value=1.0)]).SerializeToString()
    series = sample + labels  # samples first: valid protobuf, not what senders do
    data = wire.PromWriteRequestSeriesBytes(timeseries=[series]).SerializeToString()
    columns = decode(data)
    assert columns.keys == [labels]
    assert columns.timestamps.tolist() == [5] and columns.values.tolist() == [1.0]


def test_exemplars_and_histograms_are_counted_not_stored():
    series = wire.PromTimeSeries(
        labels=[wire.PromLabel(name="__name__", value="x")],
        samples=[wire.PromSample(timestamp=1, value=2.0)],
        exemplars=[b"\x08\x01"],
        histograms=[b"", b""],
    )
    columns = decode(wire.PromWriteRequest(timeseries=[series]).SerializeToString())
    assert (columns.exemplars, columns.histograms, columns.samples) == (1, 2, 1)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "not snappy"),
        (b"\xff" * 12, "not snappy"),
        (b"\x05abc", "not valid snappy"),
        (bytes(cramjam.snappy.compress_raw(b"\x0a\x05\x0a\x03\x0a\x01")), "not a remote-write WriteRequest"),
    ],
)
def test_a_body_that_is_not_a_write_request_is_refused_with_a_reason(body, message):
    with pytest.raises(InvalidArgument, match=message):
        decode(decompress(body, 1 << 20))


def test_a_body_claiming_to_decompress_past_the_limit_is_refused_before_decompressing():
    small = bytes(cramjam.snappy.compress_raw(b"\x00" * 5000))
    with pytest.raises(PayloadTooLarge, match="decompresses to 5000 bytes; the limit is 4096"):
        decompress(small, 4096)


@pytest.fixture
def receiver():
    clock = FakeClock()
    catalog = SeriesCatalog(FakeSeriesStore(), clock, refresh_every_s=0)
    limits = IngestLimits(
        max_series_per_agent=2, max_series_per_writer=100, future_skew_ms=60_000, retention_ms=86_400_000
    )
    store = FakeSampleStore()
    ingestor = Ingestor(catalog, store, WatchHub(), limits, clock)
    return RemoteWriteReceiver(ingestor), store, catalog


def write(receiver: RemoteWriteReceiver, data: bytes, hostname: str = ""):
    prepared = receiver.prepare("writer-1", hostname, decode(data))
    receiver._ingestor.store.append(prepared.chunks)  # the committer's job, done here directly
    prepared.stream.committed(prepared)
    return prepared.result


def test_a_sender_writes_many_hosts_and_a_resend_is_stored_once(receiver):
    receiver, store, catalog = receiver
    data = request(
        ({"__name__": "up", "host": "web-1", "job": "node"}, [(NOW - 2000, 1.0), (NOW - 1000, 1.0)]),
        ({"__name__": "up", "host": "web-2", "job": "node"}, [(NOW - 1000, 0.0)]),
        ({"__name__": "up", "host": "web-3", "job": "node"}, [(NOW - 1000, math.nan)]),
    )
    first = write(receiver, data)
    assert (first.accepted, first.duplicate, first.rejected) == (4, 0, 0)
    again = write(receiver, data)
    assert (again.accepted, again.duplicate, again.rejected) == (0, 4, 0)
    hosts = {dict(s.labels)["host"] for s in catalog.select([Matcher("__name__", MatchType.EQUAL, "up")])}
    assert hosts == {"web-1", "web-2", "web-3"}  # labels kept as sent: more than the per-agent limit of 2
    assert sum(len(points[0]) for points in store.raw(list(range(1, 4)), 0, NOW).values()) == 4


def test_an_agent_token_on_remote_write_still_writes_only_its_own_host(receiver):
    receiver, _, catalog = receiver
    write(receiver, request(({"__name__": "up", "host": "someone-else"}, [(NOW - 1000, 1.0)])), hostname="web-9")
    assert [dict(s.labels)["host"] for s in catalog.select([Matcher("__name__", MatchType.EQUAL, "up")])] == ["web-9"]


def test_bad_series_are_rejected_by_reason_and_the_rest_stored(receiver):
    receiver, _, _ = receiver
    result = write(
        receiver,
        request(
            ({"__name__": "ok"}, [(NOW - 1000, 1.0)]),
            ({"job": "no-name"}, [(NOW - 1000, 1.0)]),
            ({"__name__": "ancient"}, [(NOW - 10 * 86_400_000, 1.0)]),
        ),
    )
    assert result.accepted == 1 and result.rejected == 2
    assert {reason.name for reason in result.rejected_by_reason} == {"EMPTY_METRIC_NAME", "TOO_OLD"}


def test_metadata_declares_counter_and_gauge_families(receiver):
    receiver, _, catalog = receiver
    meta = [
        wire.PromMetricMetadata(type=wire.PromMetricMetadata.COUNTER, metric_family_name="reqs_total", help="h"),
        wire.PromMetricMetadata(type=wire.PromMetricMetadata.HISTOGRAM, metric_family_name="lat_seconds"),
    ]
    write(receiver, request(metadata=meta))
    assert catalog.metric_info("reqs_total").type is MetricType.COUNTER
    assert catalog.metric_info("lat_seconds_bucket").type is MetricType.COUNTER


def test_new_label_sets_are_parsed_once_per_sender():
    clock = FakeClock()
    catalog = SeriesCatalog(FakeSeriesStore(), clock, refresh_every_s=0)
    ingestor = Ingestor(catalog, FakeSampleStore(), WatchHub(), IngestLimits(max_series_per_writer=100), clock)
    receiver = RemoteWriteReceiver(ingestor)
    data = request(({"__name__": "a"}, [(NOW - 1000, 1.0)]), ({"__name__": "b"}, [(NOW - 1000, 1.0)]))
    session = receiver._session("w", "")
    first = session.batch(decode(data))
    second = session.batch(decode(data))
    assert [bool(labels) for labels in first.labels] == [True, True]
    assert second.labels == [(), ()] and second.refs == first.refs
    assert np.array_equal(second.values, first.values)


def test_a_sender_with_churning_series_gets_a_fresh_session_instead_of_growing_forever():
    clock = FakeClock()
    catalog = SeriesCatalog(FakeSeriesStore(), clock, refresh_every_s=0)
    ingestor = Ingestor(catalog, FakeSampleStore(), WatchHub(), IngestLimits(max_series_per_writer=2), clock)
    receiver = RemoteWriteReceiver(ingestor)
    first = receiver._session("w", "")
    for pod in range(5):
        receiver.prepare("w", "", decode(request(({"__name__": "up", "pod": str(pod)}, [(NOW - 1000, 1.0)]))))
    assert receiver._session("w", "") is not first
    assert receiver._session("w", "").label_sets <= 4


COUNTER = wire.PromMetricMetadata.COUNTER
GAUGE = wire.PromMetricMetadata.GAUGE


def family(name: str, kind: int, help_text: str = "") -> wire.PromMetricMetadata:
    return wire.PromMetricMetadata(type=kind, metric_family_name=name, help=help_text)


def test_a_counter_sent_before_its_metadata_takes_the_declared_type_and_no_sample_is_refused(receiver):
    receiver, _, catalog = receiver
    cpu = {"__name__": "node_cpu_seconds_total", "cpu": "0", "mode": "idle"}
    before = write(receiver, request((cpu, [(NOW - 3000, 1.0)])))  # Prometheus' first sends: no metadata yet
    write(receiver, request(metadata=[family("node_cpu_seconds_total", COUNTER, "Seconds the CPUs spent.")]))
    after = write(receiver, request((cpu, [(NOW - 2000, 2.0)])))
    assert (before.accepted, after.accepted, after.rejected) == (1, 1, 0)
    assert catalog.metric_info("node_cpu_seconds_total").type is MetricType.COUNTER
    assert [(f.name, f.type, f.help) for f in catalog.families()] == [
        ("node_cpu_seconds_total", "counter", "Seconds the CPUs spent.")
    ]


def test_writers_that_disagree_about_a_type_are_recorded_and_all_their_samples_stored(receiver):
    receiver, _, catalog = receiver
    first = write(
        receiver, request(({"__name__": "jobs", "a": "1"}, [(NOW - 1000, 1.0)]), metadata=[family("jobs", GAUGE)])
    )
    other = receiver.prepare(
        "writer-2",
        "",
        decode(request(({"__name__": "jobs", "a": "2"}, [(NOW - 1000, 1.0)]), metadata=[family("jobs", COUNTER)])),
    )
    assert (first.accepted, other.result.accepted, other.result.rejected) == (1, 1, 0)
    (conflict,) = catalog.conflicts()
    assert (conflict.kept.type, conflict.refused.type, conflict.agent_id) == (
        MetricType.GAUGE,
        MetricType.COUNTER,
        "writer-2",
    )
    assert catalog.refused_declarations() == 1
    assert [(f.name, f.type) for f in catalog.families()] == [("jobs", "counter")]  # descriptive: the latest


def test_a_histogram_is_one_family_of_type_histogram(receiver):
    receiver, _, catalog = receiver
    buckets = [({"__name__": "lat_seconds_bucket", "le": le}, [(NOW - 1000, 1.0)]) for le in ("0.1", "+Inf")]
    result = write(
        receiver, request(*buckets, metadata=[family("lat_seconds", wire.PromMetricMetadata.HISTOGRAM, "Latency.")])
    )
    assert result.accepted == 2
    assert [(f.name, f.type) for f in catalog.families()] == [("lat_seconds", "histogram")]
    assert catalog.metric_info("lat_seconds_count").type is MetricType.COUNTER


def test_metadata_that_cannot_be_kept_is_left_out_and_the_samples_stored(receiver):
    receiver, _, catalog = receiver
    too_long = family("big", GAUGE, "h" * 5000)
    result = write(
        receiver,
        request(
            ({"__name__": "big"}, [(NOW - 1000, 1.0)]),
            metadata=[too_long, family("", COUNTER), family("nul", GAUGE, "a\x00b"), family("bad name", GAUGE)],
        ),
    )
    assert (result.accepted, result.rejected) == (1, 0)
    assert catalog.families() == []


@pytest.fixture
def shared():
    """An ingestor with an agent's stream and two remote-write credentials' receivers on one catalog."""
    clock = FakeClock()
    catalog = SeriesCatalog(FakeSeriesStore(), clock, refresh_every_s=0)
    store = FakeSampleStore()
    ingestor = Ingestor(catalog, store, WatchHub(), IngestLimits(), clock)
    return ingestor, RemoteWriteReceiver(ingestor)


def test_a_remote_writer_cannot_write_into_an_agents_series(shared):
    ingestor, receiver = shared
    agent = ingestor.open_stream("agent-web-1", "web-1")
    cpu = (("__name__", "cpu_usage_percent"), ("host", "web-1"))
    assert agent.ingest(_agent_batch(cpu, NOW - 2000, 10.0)).accepted == 1
    forged = receiver.prepare("writer-1", "", decode(request((dict(cpu), [(NOW + 540_000, 99.0)]))))
    assert forged.result.accepted == 0
    (rejection,) = forged.result.rejections
    assert rejection.reason.name == "FOREIGN_SERIES" and "agent-web-1" in rejection.message
    assert agent.ingest(_agent_batch(cpu, NOW - 1000, 11.0)).accepted == 1  # not blacked out


def test_an_agent_cannot_write_into_a_series_a_remote_writer_created_but_writers_share_theirs(shared):
    ingestor, receiver = shared
    up = {"__name__": "up", "host": "web-2"}
    assert receiver.prepare("writer-1", "", decode(request((up, [(NOW - 3000, 1.0)])))).result.accepted == 1
    rotated = receiver.prepare("writer-2", "", decode(request((up, [(NOW - 2000, 1.0)]))))
    assert rotated.result.accepted == 1  # a rotated credential keeps writing what the old one wrote
    refused = ingestor.open_stream("agent-web-2", "web-2").ingest(_agent_batch(tuple(sorted(up.items())), NOW, 1.0))
    assert refused.rejections[0].reason.name == "FOREIGN_SERIES"
    assert "remote-write credential" in refused.rejections[0].message


def _agent_batch(labels, t: int, value: float):
    from infrawatch.metrics.v1 import metrics_pb2 as pb
    from services.metrics.ingest.columns import read_batch

    message = pb.MetricBatch(
        sequence=1,
        series=[
            pb.SeriesSamples(labels=[pb.Label(name=n, value=v) for n, v in labels], timestamps_ms=[t], values=[value])
        ],
    )
    return read_batch(message.SerializeToString())


def test_a_request_with_more_series_than_the_limit_is_refused_before_any_is_looked_at():
    many = request(*(({"__name__": f"s{i}"}, [(NOW, 1.0)]) for i in range(11)))
    with pytest.raises(PayloadTooLarge, match="holds 11 time series; the limit is 10"):
        decode(many, DecodeLimits(max_series=10))


def test_a_request_with_more_samples_than_the_limit_is_refused_by_the_scan():
    dense = request(({"__name__": "a"}, [(NOW - i, 1.0) for i in range(6)]), ({"__name__": "b"}, [(NOW, 1.0)]))
    with pytest.raises(PayloadTooLarge, match="more than 5 samples"):
        decode(dense, DecodeLimits(max_samples=5))


def test_a_series_with_labels_longer_than_any_storable_set_is_rejected_unparsed_and_the_rest_stored(receiver):
    receiver, _, catalog = receiver
    huge = {"__name__": "huge", "blob": "x" * (MAX_LABEL_SET_BYTES + 1)}
    columns = decode(
        request((huge, [(NOW - 1000, 1.0), (NOW - 500, 2.0)]), ({"__name__": "fine"}, [(NOW - 1000, 1.0)]))
    )
    assert [s.samples for s in columns.oversized] == [2] and len(columns.keys) == 1
    result = receiver.prepare("writer-1", "", columns).result
    assert (result.accepted, result.rejected) == (1, 2)
    assert result.rejections[0].reason.name == "INVALID_LABELS" and "bytes" in result.rejections[0].message
    assert [dict(s.labels)["__name__"] for s in catalog.select([Matcher("__name__", MatchType.NOT_EQUAL, "")])] == [
        "fine"
    ]


def test_series_of_many_samples_of_one_size_are_read_without_stepping_and_others_by_the_standard_parser():
    backfill = request(
        ({"__name__": "a"}, [(NOW - i, float(i)) for i in range(300, 0, -1)]), ({"__name__": "b"}, [(NOW, 1.0)])
    )
    columns = decode(backfill)
    assert columns.sample_counts.tolist() == [300, 1]
    assert columns.timestamps.tolist() == [NOW - i for i in range(300, 0, -1)] + [NOW]


def test_a_large_request_of_series_with_many_samples_is_refused_instead_of_stepped_through():
    # Labels first, then 200 samples of two sizes (an empty one, one with only a timestamp).
    mixed = b"\x0a\x06\x0a\x04\x0a\x01a\x00" + b"\x12\x00\x12\x02\x10\x05" * 100
    data = b"\x0a" + bytes([0x80 | (len(mixed) & 0x7F), len(mixed) >> 7]) + mixed
    with pytest.raises(PayloadTooLarge, match="not laid out as Prometheus writes them"):
        decode(data, DecodeLimits(max_standard_parse_bytes=100))
