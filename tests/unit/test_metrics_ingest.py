"""Ingest rules on fake stores: idempotence, limits, rejections, watch fan-out."""

import pytest

from infrawatch.metrics.v1 import metrics_pb2 as pb
from services.common.selectors import Matcher, MatchType
from services.metrics.domain import IngestLimits, MetricInfo, MetricType, Reason
from services.metrics.ingest.columns import read_batch
from services.metrics.ingest.stream import Ingestor
from services.metrics.storage.catalog import SeriesCatalog
from services.metrics.watch import WatchHub
from tests.unit.fakes import FakeClock, FakeSampleStore, FakeSeriesStore

CPU = [("__name__", "cpu"), ("host", "a")]


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def samples():
    return FakeSampleStore()


@pytest.fixture
def hub():
    return WatchHub()


@pytest.fixture
def ingestor(samples, hub, clock):
    catalog = SeriesCatalog(FakeSeriesStore(), clock, refresh_every_s=0)
    limits = IngestLimits(
        max_series_per_batch=3, max_series_per_agent=4, future_skew_ms=60_000, retention_ms=86_400_000
    )
    return Ingestor(catalog, samples, hub, limits, clock)


def batch(*series, sequence=1, metadata=()):
    """A batch as the server receives it: serialized by protobuf, read back as columns."""
    message = pb.MetricBatch(
        sequence=sequence,
        metadata=[pb.MetricMetadata(name=m.name, type=int(m.type), unit=m.unit, help=m.help) for m in metadata],
        series=list(series),
    )
    return read_batch(message.SerializeToString())


def one(labels, times, values, ref=0):
    return pb.SeriesSamples(
        labels=[pb.Label(name=n, value=v) for n, v in labels or ()], ref=ref, timestamps_ms=times, values=values
    )


def test_accepted_samples_are_stored_and_counted(ingestor, samples, clock):
    now = clock()
    result = ingestor.open_stream("agent").ingest(batch(one(CPU, [now - 2000, now - 1000], [1.0, 2.0])))
    assert (result.accepted, result.rejected, result.duplicate) == (2, 0, 0)
    assert samples.samples_of(1) == ([now - 2000, now - 1000], [1.0, 2.0])


def test_resending_a_batch_on_a_new_stream_stores_nothing_twice(ingestor, samples, clock):
    now = clock()
    sent = batch(one(CPU, [now - 2000, now - 1000], [1.0, 2.0]))
    ingestor.open_stream("agent").ingest(sent)
    again = ingestor.open_stream("agent").ingest(sent)
    assert (again.accepted, again.duplicate, again.rejected) == (0, 2, 0)
    assert samples.samples_of(1) == ([now - 2000, now - 1000], [1.0, 2.0])


def test_unsorted_samples_are_sorted_and_repeats_dropped(ingestor, samples, clock):
    now = clock()
    result = ingestor.open_stream("agent").ingest(
        batch(one(CPU, [now - 1000, now - 3000, now - 1000], [2.0, 1.0, 9.0]))
    )
    assert (result.accepted, result.duplicate) == (2, 1)
    assert samples.samples_of(1) == ([now - 3000, now - 1000], [1.0, 2.0])


def test_nothing_is_written_for_a_batch_of_only_rejections(ingestor, samples, clock):
    result = ingestor.open_stream("agent").ingest(batch(one([("host", "x")], [clock()], [1.0])))
    assert result.rejections[0].reason is Reason.EMPTY_METRIC_NAME
    assert samples.chunks == []


def test_series_over_the_batch_limit_are_rejected_but_the_rest_stored(ingestor, clock):
    now = clock()
    items = [one([("__name__", "m"), ("i", str(i))], [now], [1.0]) for i in range(5)]
    result = ingestor.open_stream("agent").ingest(batch(*items))
    assert (result.accepted, result.rejected) == (3, 2)
    assert [r.series_index for r in result.rejections] == [3, 4]
    assert all(r.reason is Reason.TOO_MANY_SERIES for r in result.rejections)


def test_cardinality_is_limited_per_agent(ingestor, clock):
    now = clock()
    stream = ingestor.open_stream("agent")
    for start in (0, 3):
        result = stream.ingest(
            batch(*[one([("__name__", "m"), ("i", str(i))], [now], [1.0]) for i in range(start, start + 3)])
        )
    assert (result.accepted, result.rejected) == (1, 2)
    assert {r.reason for r in result.rejections} == {Reason.CARDINALITY_LIMIT}
    other = ingestor.open_stream("other-agent").ingest(batch(one([("__name__", "m"), ("i", "99")], [now], [1.0])))
    assert other.accepted == 1


def test_future_and_too_old_samples_are_rejected_per_sample(ingestor, clock):
    now = clock()
    times = [now - 2 * 86_400_000, now - 1000, now + 120_000]
    result = ingestor.open_stream("agent").ingest(batch(one(CPU, times, [1.0, 2.0, 3.0])))
    assert result.accepted == 1
    assert sorted((r.reason, r.samples) for r in result.rejections) == [
        (Reason.TOO_FAR_IN_FUTURE, 1),
        (Reason.TOO_OLD, 1),
    ]
    assert "60s" in next(r.message for r in result.rejections if r.reason is Reason.TOO_FAR_IN_FUTURE)


def test_refs_resolve_within_a_stream_only(ingestor, clock):
    now = clock()
    first = ingestor.open_stream("agent")
    first.ingest(batch(one(CPU, [now - 2000], [1.0], ref=1)))
    assert first.ingest(batch(one(None, [now - 1000], [2.0], ref=1))).accepted == 1
    other = ingestor.open_stream("agent").ingest(batch(one(None, [now], [3.0], ref=1)))
    assert other.rejections[0].reason is Reason.UNKNOWN_REF


def test_declaring_a_counter_as_gauge_conflicts(ingestor, clock):
    now = clock()
    counter = MetricInfo("requests_total", MetricType.COUNTER)
    gauge = MetricInfo("requests_total", MetricType.GAUGE)
    labels = [("__name__", "requests_total")]
    ingestor.open_stream("a").ingest(batch(one(labels, [now - 1000], [1.0]), metadata=[counter]))
    result = ingestor.open_stream("b").ingest(batch(one([*labels, ("x", "1")], [now], [1.0]), metadata=[gauge]))
    assert result.rejections[0].reason is Reason.TYPE_CONFLICT
    assert ingestor.catalog.metric_info("requests_total").type is MetricType.COUNTER


def test_watchers_receive_only_matching_committed_samples(ingestor, hub, clock):
    now = clock()
    subscription = hub.subscribe([Matcher("host", MatchType.EQUAL, "a")])
    ingestor.open_stream("agent").ingest(
        batch(one(CPU, [now - 1000], [1.0]), one([("__name__", "cpu"), ("host", "b")], [now - 1000], [5.0]))
    )
    (update,) = subscription.drain()
    assert (update[0].labels, update[1], update[2]) == (tuple(CPU), [now - 1000], [1.0])
    assert subscription.drain() == []


def test_a_failed_write_is_not_acknowledged_and_not_published(ingestor, samples, hub, clock):
    subscription = hub.subscribe([Matcher("host", MatchType.EQUAL, "a")])

    def broken(chunks):
        raise ConnectionError("database went away")

    samples.append = broken
    with pytest.raises(ConnectionError):
        ingestor.open_stream("agent").ingest(batch(one(CPU, [clock() - 1000], [1.0])))
    assert subscription.drain() == []


def _commit_all(committer, prepared_batches):
    """Submit batches to a started committer and wait for each outcome (None or the error)."""
    import threading

    outcomes, finished = {}, threading.Event()

    def done_for(number):
        def done(error):
            outcomes[number] = error
            if len(outcomes) == len(prepared_batches):
                finished.set()

        return done

    for number, prepared in enumerate(prepared_batches):
        committer.submit(prepared, done_for(number))
    assert finished.wait(10)
    return [outcomes[n] for n in range(len(prepared_batches))]


def test_the_group_committer_writes_many_streams_batches_in_one_transaction(ingestor, samples, clock):
    from services.metrics.ingest.commit import GroupCommitter

    now = clock()
    prepared = [
        ingestor.open_stream(f"agent-{n}").prepare(batch(one([("__name__", "m"), ("n", str(n))], [now], [1.0])))
        for n in range(3)
    ]
    committer = GroupCommitter(samples)
    committer.start()
    try:
        assert _commit_all(committer, prepared) == [None, None, None]
    finally:
        committer.stop()
    assert samples.appends == 1 and len(samples.chunks) == 3


def test_after_a_failed_commit_the_stream_writes_nothing_more_and_a_resend_is_stored(ingestor, samples, clock):
    from services.metrics.ingest.commit import GroupCommitter

    now = clock()
    stream = ingestor.open_stream("agent")
    first = stream.prepare(batch(one(CPU, [now - 2000], [1.0])))
    healthy_append = samples.append

    def broken(chunks):
        raise ConnectionError("database went away")

    samples.append = broken
    committer = GroupCommitter(samples)
    committer.start()
    try:
        (error,) = _commit_all(committer, [first])
        assert isinstance(error, ConnectionError)
        assert stream.broken
        with pytest.raises(Exception, match="reconnect"):
            stream.prepare(batch(one(CPU, [now - 1000], [2.0])))
    finally:
        committer.stop()
    # The agent reconnects and re-sends: the batch that never committed is stored, not rejected
    # as older than a mark that had run ahead of the store.
    samples.append = healthy_append
    again = ingestor.open_stream("agent").ingest(batch(one(CPU, [now - 2000, now - 1000], [1.0, 2.0])))
    assert (again.accepted, again.rejected) == (2, 0)


def test_invalid_metadata_rejects_that_metrics_series_and_stores_the_rest(ingestor, samples, clock):
    now = clock()
    stream = ingestor.open_stream("agent")
    bad = MetricInfo("cpu", MetricType.GAUGE, unit="u" * 500)
    result = stream.ingest(
        batch(
            one(CPU, [now - 2000], [1.0]),
            one([("__name__", "mem"), ("host", "a")], [now - 2000], [2.0]),
            metadata=[bad],
        )
    )
    assert (result.accepted, result.rejected) == (1, 1)
    (rejection,) = result.rejections
    assert rejection.reason is Reason.INVALID_METADATA and "unit" in rejection.message
    fixed = stream.ingest(
        batch(one(CPU, [now - 1000], [3.0]), metadata=[MetricInfo("cpu", MetricType.GAUGE, "percent")])
    )
    assert (fixed.accepted, fixed.rejected) == (1, 0)


def test_the_whole_store_has_a_cardinality_limit_too(samples, hub, clock):
    catalog = SeriesCatalog(FakeSeriesStore(), clock, refresh_every_s=0)
    limits = IngestLimits(max_series_per_agent=100, max_series_total=5)
    ingestor = Ingestor(catalog, samples, hub, limits, clock)
    now = clock()
    for agent in ("a", "b"):
        result = ingestor.open_stream(agent).ingest(
            batch(*[one([("__name__", "m"), ("agent", agent), ("i", str(i))], [now], [1.0]) for i in range(3)])
        )
    assert (result.accepted, result.rejected) == (2, 1)
    assert "INFRAWATCH_MAX_SERIES" in result.rejections[0].message
    assert result.rejections[0].reason is Reason.CARDINALITY_LIMIT


def test_a_huge_selector_is_refused_without_being_echoed():
    from services.common.errors import InvalidArgument
    from services.common.selectors import MAX_SELECTOR_CHARS, parse_selector

    with pytest.raises(InvalidArgument) as raised:
        parse_selector("x{" * (MAX_SELECTOR_CHARS // 2 + 1))
    assert "the limit is" in str(raised.value) and len(str(raised.value)) < 200
    with pytest.raises(InvalidArgument) as raised:
        parse_selector('cpu{host="a"' + " " * 5000 + "junk junk")
    assert len(str(raised.value)) < 300


def _protected_ingestor(samples, hub, clock):
    from agent.metric_kinds import KINDS

    protected = [MetricInfo(name, MetricType(kind.type), kind.unit, kind.help) for name, kind in KINDS.items()]
    catalog = SeriesCatalog(FakeSeriesStore(), clock, refresh_every_s=0, protected=protected)
    return Ingestor(catalog, samples, hub, IngestLimits(), clock)


def test_the_agents_own_metric_types_cannot_be_squatted(samples, hub, clock):
    ingestor = _protected_ingestor(samples, hub, clock)
    now = clock()
    load1 = [("__name__", "load1"), ("host", "squatter")]
    squat = ingestor.open_stream("squatter").ingest(
        batch(one(load1, [now - 1000], [1.0]), metadata=[MetricInfo("load1", MetricType.COUNTER)])
    )
    assert squat.rejections[0].reason is Reason.TYPE_CONFLICT
    real = ingestor.open_stream("real-agent").ingest(
        batch(
            one([("__name__", "load1"), ("host", "web-1")], [now - 1000], [0.5]),
            metadata=[MetricInfo("load1", MetricType.GAUGE)],
        )
    )
    assert (real.accepted, real.rejected) == (1, 0)
    (conflict,) = ingestor.catalog.conflicts()
    assert (conflict.kept.type, conflict.refused.type, conflict.agent_id) == (
        MetricType.GAUGE,
        MetricType.COUNTER,
        "squatter",
    )


def test_one_senders_unit_and_help_are_not_rewritten_by_another(ingestor, clock):
    now = clock()
    first = MetricInfo("queue_depth", MetricType.GAUGE, "jobs", "Jobs waiting.")
    ingestor.open_stream("a").ingest(batch(one([("__name__", "queue_depth")], [now], [1.0]), metadata=[first]))
    rewrite = MetricInfo("queue_depth", MetricType.GAUGE, "jobs", "Something else entirely.")
    ingestor.open_stream("b").ingest(
        batch(one([("__name__", "queue_depth"), ("x", "1")], [now], [1.0]), metadata=[rewrite])
    )
    assert ingestor.catalog.metric_info("queue_depth") == first
    assert ingestor.catalog.conflicts()[0].agent_id == "b"


def test_ref_ids_answer_the_same_for_dense_and_sparse_refs_after_any_changes():
    from services.metrics.ingest.stream import RefIds

    ids = RefIds()
    for ref in (1, 2, 3, 2**40, -5):
        ids[ref] = ref * 10
    ids.pop(2)
    assert ids.many([1, 2, 3]).tolist() == [10, -1, 30]  # dense: the array
    assert ids.many([3, 2**40, -5, 7]).tolist() == [30, 2**40 * 10, -50, -1]  # sparse: the dict
    ids.clear()
    assert ids.many([1, 3]).tolist() == [-1, -1] and ids.get(2**40) == -1


def test_stream_slots_cap_the_total_and_each_caller_and_free_on_exit():
    from services.common.errors import ResourceExhausted
    from services.metrics.servicer import StreamSlots, watch_caller

    slots = StreamSlots(3, 2, "TOTAL_SETTING", "PER_CALLER_SETTING")
    with slots.hold("a"), slots.hold("a"):
        with pytest.raises(ResourceExhausted, match="PER_CALLER_SETTING"), slots.hold("a"):
            pass
        with slots.hold("b"), pytest.raises(ResourceExhausted, match="TOTAL_SETTING"), slots.hold("c"):
            pass
    assert slots.open == 0
    with slots.hold("a"), slots.hold("a"):
        assert slots.open == 2
    gateway = [slots.hold(None) for _ in range(4)]  # the gateway: held to the total only
    for held in gateway[:3]:
        held.__enter__()
    with pytest.raises(ResourceExhausted, match="TOTAL_SETTING"):
        gateway[3].__enter__()
    for held in gateway[:3]:
        held.__exit__(None, None, None)
    assert slots.open == 0
    assert watch_caller("", "ipv4:10.1.2.3:5555") == watch_caller("", "ipv4:10.1.2.3:6666")
    assert watch_caller("", "ipv6:[::1]:5555") == "anonymous:ipv6:[::1]"
    assert watch_caller("tok", "ipv4:10.1.2.3:5555").startswith("token:")
