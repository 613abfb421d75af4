"""Composition root of the metrics service: settings, engine, stores, stubs, servicer, server."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from infrawatch.metrics.v1 import metrics_pb2_grpc
from services.common.clock import wall_clock_ms
from services.common.config import settings_from_command_line
from services.common.db import check_database, create_db_engine, database_url, is_postgres, migrate
from services.common.logs import configure_logging, event
from services.common.server import ServiceBinding, build_server, install_stop_signals, serve
from services.metrics.auth import AgentsClient, CachedAuthenticator
from services.metrics.domain import IngestLimits
from services.metrics.ingest.stream import Ingestor
from services.metrics.maintenance import MaintenancePolicy, MaintenanceTask, enforce_retention
from services.metrics.query.use_cases import QueryContext
from services.metrics.servicer import SERVICE_NAME, MetricsServicer
from services.metrics.settings import METRICS_VARS, MetricsSettings
from services.metrics.storage.catalog import SeriesCatalog
from services.metrics.storage.ports import SampleStore
from services.metrics.storage.postgres.samples import PostgresSampleStore
from services.metrics.storage.series_sql import SqlSeriesStore
from services.metrics.storage.sqlite.samples import SqliteSampleStore
from services.metrics.watch import WatchHub

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_metrics"

_log = logging.getLogger("infrawatch.metrics")


def main(argv: list[str] | None = None) -> None:
    settings = settings_from_command_line(
        "python -m services.metrics",
        "InfraWatch metrics service: streaming ingest, chunked time-series storage, range and "
        "aggregate queries and live watch, over gRPC (infrawatch.metrics.v1.MetricsService).",
        METRICS_VARS,
        MetricsSettings.from_env,
        argv,
    )
    configure_logging(settings.log_level)

    stop = install_stop_signals()
    # No ping per checkout: ingest checks out a connection per batch; broken connections are
    # invalidated by the stores when they fail instead.
    engine = create_db_engine(database_url(settings.database_url, settings.data_dir, "metrics"), pool_pre_ping=False)
    samples: SampleStore = (
        PostgresSampleStore(engine, settings.query_parallelism) if is_postgres(engine) else SqliteSampleStore(engine)
    )
    catalog = SeriesCatalog(SqlSeriesStore(engine), wall_clock_ms)
    hub = WatchHub()
    limits = IngestLimits(
        max_series_per_batch=settings.max_series_per_batch,
        max_series_per_agent=settings.max_series_per_agent,
        future_skew_ms=int(settings.max_future_skew * 1000),
        retention_ms=int(settings.retention * 1000),
    )
    maintenance = MaintenancePolicy(
        retention_ms=limits.retention_ms,
        compaction_window_ms=int(settings.compaction_window * 1000),
        compaction_delay_ms=int(settings.compaction_delay * 1000),
        every_s=settings.maintenance_every,
    )
    agents_channel = grpc.insecure_channel(settings.agents_address)
    authenticator = CachedAuthenticator(
        AgentsClient(agents_channel, settings.downstream_timeout, stop).authenticate, settings.auth_cache_ttl
    )
    servicer = MetricsServicer(
        Ingestor(catalog, samples, hub, limits, wall_clock_ms),
        QueryContext(catalog, samples, wall_clock_ms, settings.max_query_points),
        hub,
        authenticator,
        stop,
    )
    server, health, port = build_server(
        [ServiceBinding(SERVICE_NAME, lambda s: metrics_pb2_grpc.add_MetricsServiceServicer_to_server(servicer, s))],
        address=f"{settings.bind_host}:{settings.metrics_port}",
        max_message_bytes=settings.max_message_bytes,
    )
    event(
        _log,
        "metrics service listening",
        port=port,
        database=engine.url.render_as_string(hide_password=True),
        agents=settings.agents_address,
    )

    def prepare() -> None:
        migrate(engine, MIGRATIONS, VERSION_TABLE)
        catalog.refresh(force=True)
        enforce_retention(samples, limits.retention_ms, wall_clock_ms())
        MaintenanceTask(samples, maintenance, wall_clock_ms, stop).start()

    try:
        serve(
            server,
            health,
            service_names=[SERVICE_NAME],
            prepare=prepare,
            is_healthy=lambda: check_database(engine),
            stop=stop,
            grace_seconds=settings.shutdown_grace,
        )
    finally:
        agents_channel.close()
        engine.dispose()


if __name__ == "__main__":
    main()
