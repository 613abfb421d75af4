"""Two metrics replicas share one store: each catalog sees the series the other created."""

from services.common.clock import wall_clock_ms
from services.common.selectors import parse_selector
from services.metrics.domain import MetricInfo, MetricType, canonical
from services.metrics.storage.catalog import SeriesCatalog
from services.metrics.storage.series_sql import SqlSeriesStore


def test_a_replica_sees_series_and_metric_names_created_by_another(metrics_engine):
    first = SeriesCatalog(SqlSeriesStore(metrics_engine), wall_clock_ms, refresh_every_s=0)
    second = SeriesCatalog(SqlSeriesStore(metrics_engine), wall_clock_ms, refresh_every_s=0)
    first.refresh(force=True)
    second.refresh(force=True)
    labels = canonical([("__name__", "shared_metric"), ("host", "a")])
    first.declare(MetricInfo("shared_metric", MetricType.COUNTER, "bytes"))
    created = first.create("agent-1", [labels], limit=10)
    assert second.select(parse_selector("shared_metric")) == []
    second.refresh()
    (found,) = second.select(parse_selector("shared_metric"))
    assert found.series_id == created[labels]
    assert second.metric_info("shared_metric").type is MetricType.COUNTER


def test_an_unchanged_store_is_not_reloaded(metrics_engine):
    store = SqlSeriesStore(metrics_engine)
    catalog = SeriesCatalog(store, wall_clock_ms, refresh_every_s=0)
    catalog.refresh(force=True)
    catalog.create("agent-1", [canonical([("__name__", "m"), ("i", "1")])], limit=10)
    loads = []
    original = store.load_series
    store.load_series = lambda after_id: loads.append(after_id) or original(after_id)
    catalog.refresh()
    assert loads == []
