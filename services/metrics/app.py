"""Wiring of the metrics context, shared by its composition root and the tests: engine and
settings in, a servicer with its stores, caches and worker pools out."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from agent.metric_kinds import KINDS
from services.common.credentials import Credentials
from services.common.db import is_postgres, unreachable_database_errors
from services.common.server import AsyncServiceBinding
from services.common.telemetry import watch_pool
from services.metrics.auth import AgentsClient, CachedAuthenticator
from services.metrics.domain import IngestLimits, MetricInfo, MetricType
from services.metrics.ingest.commit import GroupCommitter
from services.metrics.ingest.stream import Ingestor
from services.metrics.prom.http import PromSide, ServerStatus
from services.metrics.prom.remote_write import DecodeLimits, RemoteWriteReceiver
from services.metrics.prom.rules_api import AlertsRelay
from services.metrics.query.promql.evaluator import QueryLimits
from services.metrics.query.promql.selection_cache import SelectionCache
from services.metrics.query.use_cases import QueryContext
from services.metrics.servicer import SERVICE_NAME, MetricsServicer, StreamSlots, add_to_server
from services.metrics.storage.catalog import SeriesCatalog
from services.metrics.storage.newest import NewestRemembered
from services.metrics.storage.ports import SampleStore
from services.metrics.storage.postgres.samples import PostgresSampleStore
from services.metrics.storage.series_sql import SqlSeriesStore
from services.metrics.storage.sqlite.samples import SqliteSampleStore
from services.metrics.telemetry import MetricsTelemetry
from services.metrics.watch import WatchHub


@dataclass(frozen=True)
class MetricsConfig:
    limits: IngestLimits = field(default_factory=IngestLimits)
    max_query_points: int = 1_000_000
    query_parallelism: int = 2
    auth_cache_ttl_s: float = 5.0
    auth_grace_s: float = 900.0
    downstream_timeout_s: float = 5.0
    max_streams: int = 10_000
    max_streams_per_agent: int = 16
    max_watch_streams: int = 1_000
    max_watch_streams_per_caller: int = 50
    ingest_workers: int = 4
    query_workers: int = 4
    catalog_refresh_s: float = 1.0
    credentials: Credentials = field(default_factory=Credentials)
    lookback_ms: int = 300_000
    promql_max_samples: int = 20_000_000
    promql_max_points: int = 20_000_000
    promql_timeout_s: float = 120.0
    promql_workers: int = 2
    max_remote_write_bytes: int = 64 * 1024 * 1024


@dataclass
class MetricsApp:
    servicer: MetricsServicer
    ingestor: Ingestor
    samples: SampleStore
    catalog: SeriesCatalog
    hub: WatchHub
    slots: StreamSlots
    committer: GroupCommitter
    pools: tuple[ThreadPoolExecutor, ...]
    telemetry: MetricsTelemetry
    prom: PromSide

    def binding(self) -> AsyncServiceBinding:
        return AsyncServiceBinding(SERVICE_NAME, lambda server: add_to_server(self.servicer, server))

    def close(self) -> None:
        self.committer.stop()
        for pool in self.pools:
            pool.shutdown(wait=False, cancel_futures=True)


def build_metrics_app(
    engine: Engine,
    config: MetricsConfig,
    agents_channel: grpc.Channel,
    stop: threading.Event,
    now_ms: Callable[[], int],
    registry: CollectorRegistry | None = None,
    alerts_channel: grpc.Channel | None = None,
) -> MetricsApp:
    """`registry` receives the service's telemetry (a private one when not given, as in tests that
    do not look at it); `alerts_channel` is where the Prometheus side reads rules and alerts."""
    telemetry = MetricsTelemetry(registry if registry is not None else CollectorRegistry())
    stored: SampleStore = (
        PostgresSampleStore(engine, config.query_parallelism) if is_postgres(engine) else SqliteSampleStore(engine)
    )
    # Latest values of what this process committed come from memory (see storage/newest.py).
    samples: SampleStore = NewestRemembered(stored)
    # The InfraWatch agent's own metrics keep their types whoever declares them first.
    protected = [
        MetricInfo(name, MetricType(kind.type), kind.unit, kind.help) for name, kind in KINDS.items() if kind.type
    ]
    catalog = SeriesCatalog(
        SqlSeriesStore(engine), now_ms, refresh_every_s=config.catalog_refresh_s, protected=protected
    )
    hub = WatchHub(on_dropped=telemetry.watch_dropped.inc)
    ingestor = Ingestor(catalog, samples, hub, config.limits, now_ms)
    authenticator = CachedAuthenticator(
        AgentsClient(agents_channel, config.credentials.service_token, config.downstream_timeout_s, stop).authenticate,
        config.auth_cache_ttl_s,
        grace_s=config.auth_grace_s,
    )
    ingest_pool = ThreadPoolExecutor(config.ingest_workers, thread_name_prefix="ingest")
    query_pool = ThreadPoolExecutor(config.query_workers, thread_name_prefix="query")
    promql_pool = ThreadPoolExecutor(config.promql_workers, thread_name_prefix="promql")
    slots = StreamSlots(
        config.max_streams, config.max_streams_per_agent, "INFRAWATCH_MAX_STREAMS", "INFRAWATCH_MAX_STREAMS_PER_AGENT"
    )
    watch_slots = StreamSlots(
        config.max_watch_streams,
        config.max_watch_streams_per_caller,
        "INFRAWATCH_MAX_WATCH_STREAMS",
        "INFRAWATCH_MAX_WATCH_STREAMS_PER_CALLER",
    )
    committer = GroupCommitter(samples)
    committer.start()
    queries = QueryContext(catalog, samples, now_ms, config.max_query_points)
    servicer = MetricsServicer(
        ingestor,
        queries,
        hub,
        authenticator,
        stop,
        ingest_pool=ingest_pool,
        query_pool=query_pool,
        slots=slots,
        watch_slots=watch_slots,
        committer=committer,
        credentials=config.credentials,
        telemetry=telemetry,
        promql_pool=promql_pool,
        promql_limits=QueryLimits(config.promql_max_samples, config.promql_max_points, config.promql_timeout_s),
        lookback_ms=config.lookback_ms,
        # InstantQuery serves alerting rules: a cycle's queries at one instant share their reads.
        selection_cache=SelectionCache(),
    )
    telemetry.gauge("infrawatch_ingest_open_streams", "StreamMetrics calls open now.", lambda: slots.open)
    telemetry.gauge("infrawatch_watch_open_streams", "WatchMetrics calls open now.", lambda: watch_slots.open)
    telemetry.gauge("infrawatch_watch_subscribers", "WatchMetrics subscribers now.", hub.subscriber_count)
    telemetry.gauge("infrawatch_series", "Series known to this process's catalog.", catalog.series_count)
    telemetry.gauge(
        "infrawatch_ingest_pending_commits", "Prepared batches waiting for the group committer.", committer.pending
    )
    telemetry.gauge(
        "infrawatch_metadata_refused_declarations",
        "Metric metadata declarations that disagreed with what is kept (listed by ListMetricNames' conflicts); "
        "a remote writer's samples are stored all the same.",
        catalog.refused_declarations,
    )
    watch_pool(telemetry.registry, engine)
    prom = PromSide(
        receiver=RemoteWriteReceiver(ingestor),
        authenticator=authenticator,
        committer=committer,
        ingest_pool=ingest_pool,
        query_pool=query_pool,
        queries=queries,
        credentials=config.credentials,
        telemetry=telemetry,
        max_request_bytes=config.max_remote_write_bytes,
        lookback_ms=config.lookback_ms,
        promql_pool=promql_pool,
        promql_limits=QueryLimits(config.promql_max_samples, config.promql_max_points, config.promql_timeout_s),
        unreachable=unreachable_database_errors(),
        decode_limits=DecodeLimits(config.limits.max_series_per_batch, config.limits.max_samples_per_write),
        alerts=AlertsRelay(alerts_channel, config.credentials.service_token, config.downstream_timeout_s)
        if alerts_channel is not None
        else None,
        status=ServerStatus(
            {
                # Prometheus' flag names, for the settings that mean the same here.
                "query.lookback-delta": f"{config.lookback_ms // 1000}s",
                "query.max-samples": str(config.promql_max_samples),
                "query.timeout": f"{config.promql_timeout_s:g}s",
                "storage.tsdb.retention.time": f"{config.limits.retention_ms // 1000}s",
                "web.enable-remote-write-receiver": "true",
            }
        ),
    )
    return MetricsApp(
        servicer,
        ingestor,
        samples,
        catalog,
        hub,
        slots,
        committer,
        (ingest_pool, query_pool, promql_pool),
        telemetry,
        prom,
    )
