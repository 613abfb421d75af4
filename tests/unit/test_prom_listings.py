"""The Prometheus side's listings on fake stores: series, label names and values narrowed to a
window, metadata by family, cardinality statistics and the agents' scrape targets, as Grafana
reads them."""

from __future__ import annotations

import pytest

from infrawatch.metrics.v1 import metrics_pb2 as pb
from infrawatch.metrics.v1 import remote_write_pb2 as wire
from services.metrics.domain import IngestLimits
from services.metrics.ingest.columns import read_batch
from services.metrics.ingest.stream import Ingestor
from services.metrics.prom.listings import Listings, Window
from services.metrics.prom.remote_write import RemoteWriteReceiver, decode
from services.metrics.query.promql.parser import format_query
from services.metrics.query.use_cases import QueryContext
from services.metrics.storage.catalog import SeriesCatalog
from services.metrics.watch import WatchHub
from tests.unit.fakes import FakeClock, FakeSampleStore, FakeSeriesStore

HOUR = 3_600_000


@pytest.fixture
def side():
    clock = FakeClock()
    catalog = SeriesCatalog(FakeSeriesStore(), clock, refresh_every_s=0)
    store = FakeSampleStore()
    ingestor = Ingestor(catalog, store, WatchHub(), IngestLimits(retention_ms=48 * HOUR), clock)
    engine = Listings(QueryContext(catalog, store, clock), lookback_ms=300_000)
    return ingestor, RemoteWriteReceiver(ingestor), store, engine, clock()


def remote_write(receiver, store, *series, metadata=()):
    data = wire.PromWriteRequest(
        timeseries=[
            wire.PromTimeSeries(
                labels=[wire.PromLabel(name=k, value=v) for k, v in sorted(labels.items())],
                samples=[wire.PromSample(timestamp=t, value=1.0) for t in times],
            )
            for labels, times in series
        ],
        metadata=list(metadata),
    ).SerializeToString()
    prepared = receiver.prepare("writer", "", decode(data))
    store.append(prepared.chunks)
    prepared.stream.committed(prepared)
    return prepared.result


def test_listings_narrowed_to_a_window_hold_only_series_with_data_in_it(side):
    _, receiver, store, engine, now = side
    remote_write(
        receiver,
        store,
        ({"__name__": "up", "job": "old", "zone": "a"}, [now - 30 * HOUR]),
        ({"__name__": "up", "job": "new"}, [now - HOUR]),
    )
    recent = Window(now - 2 * HOUR, now)
    assert (
        Window(now - 10 * HOUR, now - 5 * HOUR) and engine.series(["up"], Window(now - 10 * HOUR, now - 5 * HOUR)) == []
    )
    assert [dict(labels)["job"] for labels in engine.series(["up"], recent)] == ["new"]
    assert [dict(labels)["job"] for labels in engine.series(["up"])] == ["new", "old"]  # no window: all
    assert engine.label_names([], recent) == ["__name__", "job"]
    assert engine.label_names([]) == ["__name__", "job", "zone"]
    assert engine.label_values("job", [], recent) == ["new"]
    assert engine.label_values("job", ['up{job=~".+"}'], Window(now - 31 * HOUR, now - 29 * HOUR)) == ["old"]


def test_metadata_is_by_family_with_the_declared_type_and_honours_metric_and_limit(side):
    _, receiver, store, engine, now = side
    meta = [
        wire.PromMetricMetadata(
            type=wire.PromMetricMetadata.HISTOGRAM, metric_family_name="lat_seconds", help="Latency."
        ),
        wire.PromMetricMetadata(
            type=wire.PromMetricMetadata.COUNTER, metric_family_name="reqs_total", help="Requests."
        ),
        wire.PromMetricMetadata(type=wire.PromMetricMetadata.SUMMARY, metric_family_name="gc_seconds", help="GC."),
    ]
    remote_write(receiver, store, ({"__name__": "lat_seconds_bucket", "le": "1"}, [now - 1000]), metadata=meta)
    assert engine.metadata() == {
        "gc_seconds": [{"type": "summary", "help": "GC.", "unit": ""}],
        "lat_seconds": [{"type": "histogram", "help": "Latency.", "unit": ""}],
        "reqs_total": [{"type": "counter", "help": "Requests.", "unit": ""}],
    }
    assert list(engine.metadata("reqs_total")) == ["reqs_total"]
    assert len(engine.metadata(limit=2)) == 2


def test_an_agents_metric_types_are_families_of_their_own_and_untyped_names_are_left_out(side):
    ingestor, _, _, engine, now = side
    message = pb.MetricBatch(
        sequence=1,
        metadata=[pb.MetricMetadata(name="jobs_done_total", type=pb.METRIC_TYPE_COUNTER, help="Jobs.")],
        series=[
            pb.SeriesSamples(labels=[pb.Label(name="__name__", value=n)], timestamps_ms=[now - 1000], values=[1.0])
            for n in ("jobs_done_total", "mystery")
        ],
    )
    ingestor.open_stream("agent-1", "web-1").ingest(read_batch(message.SerializeToString()))
    assert engine.metadata() == {"jobs_done_total": [{"type": "counter", "help": "Jobs.", "unit": ""}]}


def test_tsdb_status_ranks_metric_names_and_label_pairs_by_series(side):
    _, receiver, store, engine, now = side
    remote_write(
        receiver,
        store,
        *(({"__name__": "http_requests_total", "pod": f"p{i}"}, [now - 1000]) for i in range(5)),
        ({"__name__": "up", "pod": "p0"}, [now - 1000]),
    )
    status = engine.tsdb_status(top=2)
    assert status["headStats"]["numSeries"] == 6
    assert status["seriesCountByMetricName"] == [
        {"name": "http_requests_total", "value": 5},
        {"name": "up", "value": 1},
    ]
    assert status["labelValueCountByLabelName"][0] == {"name": "pod", "value": 5}
    assert status["seriesCountByLabelValuePair"][0] == {"name": "__name__=http_requests_total", "value": 5}


def test_targets_are_what_agents_scrape_with_their_health(side):
    ingestor, receiver, store, engine, now = side

    def scraped(host: str, up: float) -> None:
        target = [pb.Label(name="job", value="app"), pb.Label(name="instance", value=f"{host}:8080")]
        message = pb.MetricBatch(
            sequence=1,
            series=[
                pb.SeriesSamples(
                    labels=[pb.Label(name="__name__", value=name), *target], timestamps_ms=[now - 1000], values=[value]
                )
                for name, value in (("up", up), ("scrape_duration_seconds", 0.25))
            ],
        )
        ingestor.open_stream(f"agent-{host}", host).ingest(read_batch(message.SerializeToString()))

    scraped("web-1", 1.0)
    scraped("web-2", 0.0)
    remote_write(receiver, store, ({"__name__": "up", "job": "prometheus"}, [now - 1000]))  # not an agent's target
    found = engine.targets()["activeTargets"]
    assert [(t["labels"]["host"], t["health"], t["lastScrapeDuration"]) for t in found] == [
        ("web-1", "up", 0.25),
        ("web-2", "down", 0.25),
    ]
    assert found[0]["lastError"] == "" and "web-2" in found[1]["lastError"]
    assert found[0]["scrapePool"] == "app" and found[0]["lastScrape"].endswith("Z")


def test_format_query_prints_the_parsed_expression_back():
    assert format_query('sum by(job)(rate(x{a="b"}[5m]))>3') == 'sum by (job) (rate(x{a="b"}[5m])) > 3'
