"""Composition root of the metrics service: settings, engine, stub, app, asyncio server."""

from __future__ import annotations

import asyncio
import logging
import ssl
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agent.logs import configure_logging, event
from services.common.allocator import keep_large_arrays_on_the_heap
from services.common.clock import wall_clock_ms
from services.common.config import settings_from_command_line
from services.common.credentials import Credentials
from services.common.db import check_database, create_db_engine, database_url, migrate, unreachable_database_errors
from services.common.http_server import QuietServer, host_port, http_config, listen_socket
from services.common.server import build_async_server, install_stop_signals, serve_async
from services.common.telemetry import RpcTelemetry, new_registry, serve_or_exit
from services.common.tls import client_tls_from, server_tls_from, tls_summary, warn_if_plaintext_beyond_loopback
from services.metrics.app import MetricsConfig, build_metrics_app
from services.metrics.domain import IngestLimits
from services.metrics.maintenance import MaintenancePolicy, MaintenanceTask, enforce_retention
from services.metrics.prom.http import build_prom_app
from services.metrics.servicer import SERVICE_NAME
from services.metrics.settings import METRICS_VARS, MetricsSettings

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_metrics"

_log = logging.getLogger("infrawatch.metrics")


def config_from(settings: MetricsSettings) -> MetricsConfig:
    return MetricsConfig(
        limits=IngestLimits(
            max_series_per_batch=settings.max_series_per_batch,
            max_series_per_agent=settings.max_series_per_agent,
            max_series_per_writer=settings.max_series_per_writer,
            max_series_total=settings.max_series,
            max_samples_per_write=settings.max_samples_per_write,
            future_skew_ms=int(settings.max_future_skew * 1000),
            retention_ms=int(settings.retention * 1000),
        ),
        max_query_points=settings.max_query_points,
        query_parallelism=settings.query_parallelism,
        auth_cache_ttl_s=settings.auth_cache_ttl,
        auth_grace_s=settings.auth_grace,
        downstream_timeout_s=settings.downstream_timeout,
        max_streams=settings.max_streams,
        max_streams_per_agent=settings.max_streams_per_agent,
        max_watch_streams=settings.max_watch_streams,
        max_watch_streams_per_caller=settings.max_watch_streams_per_caller,
        ingest_workers=settings.ingest_workers,
        query_workers=settings.query_workers,
        credentials=Credentials(
            operator_token=settings.operator_token,
            service_token=settings.service_token,
            protect_reads=settings.protect_reads,
        ),
        lookback_ms=int(settings.lookback_delta * 1000),
        promql_max_samples=settings.promql_max_samples,
        promql_max_points=settings.promql_max_points,
        promql_timeout_s=settings.promql_timeout,
        promql_workers=settings.promql_workers,
        max_remote_write_bytes=settings.max_remote_write_bytes,
    )


def main(argv: list[str] | None = None) -> None:
    settings = settings_from_command_line(
        "python -m services.metrics",
        "InfraWatch metrics service: streaming ingest, chunked time-series storage, range and "
        "aggregate queries and live watch, over gRPC (infrawatch.metrics.v1.MetricsService).",
        METRICS_VARS,
        MetricsSettings.from_env,
        argv,
    )
    configure_logging(settings.log_level, "metrics")
    if not keep_large_arrays_on_the_heap():
        event(_log, "not glibc: query arrays use the default allocator (slower decoding)")

    stop = install_stop_signals()
    config = config_from(settings)
    # No ping per checkout: ingest checks out a connection per batch; broken connections are
    # invalidated by the stores when they fail instead. The pool covers every worker thread.
    workers = config.ingest_workers + config.query_workers + config.query_parallelism + 2
    engine = create_db_engine(
        database_url(settings.database_url, settings.data_dir, "metrics"),
        pool_pre_ping=False,
        **({"pool_size": workers, "max_overflow": 4} if settings.database_url else {}),
    )
    agents_channel = client_tls_from(settings).channel(settings.agents_address)
    alerts_channel = client_tls_from(settings).channel(settings.alerts_address) if settings.alerts_address else None
    registry = new_registry()
    app = build_metrics_app(engine, config, agents_channel, stop, wall_clock_ms, registry, alerts_channel)
    maintenance = MaintenancePolicy(
        retention_ms=config.limits.retention_ms,
        compaction_window_ms=int(settings.compaction_window * 1000),
        compaction_delay_ms=int(settings.compaction_delay * 1000),
        every_s=settings.maintenance_every,
    )
    blocking = ThreadPoolExecutor(2, thread_name_prefix="lifecycle")

    def prepare() -> None:
        migrate(engine, MIGRATIONS, VERSION_TABLE)
        app.catalog.refresh(force=True)
        enforce_retention(app.samples, config.limits.retention_ms, wall_clock_ms())
        MaintenanceTask(app.samples, maintenance, wall_clock_ms, stop, app.telemetry.maintenance_pass).start()

    prom_listener, prom_address = None, ""
    if settings.prom_port is not None:
        prom_host = settings.bind_host.strip("[]") or "::"
        prom_listener = listen_socket(prom_host, settings.prom_port, "INFRAWATCH_PROM_PORT")
        prom_address = host_port(prom_host, settings.prom_port)

    def prom_server() -> QuietServer | None:
        """The Prometheus side (remote-write, query API), served on the gRPC server's loop."""
        if prom_listener is None:
            return None
        tls = server_tls_from(settings)
        if not tls.enabled:
            warn_if_plaintext_beyond_loopback(prom_address, "set INFRAWATCH_TLS_CERT and INFRAWATCH_TLS_KEY")
        event(
            _log,
            "Prometheus side listening",
            port=settings.prom_port,
            scheme="https" if tls.enabled else "http",
            remote_write="/api/v1/write",
            query="/api/v1/query",
        )
        return QuietServer(
            http_config(
                build_prom_app(app.prom),
                settings.http_keepalive,
                # The service's own certificate (and client CA for mutual TLS) serve HTTPS here too.
                ssl_certfile=tls.cert_file or None,
                ssl_keyfile=tls.key_file or None,
                ssl_ca_certs=tls.client_ca_file or None,
                ssl_cert_reqs=ssl.CERT_REQUIRED if tls.client_ca_file else ssl.CERT_NONE,
            )
        )

    async def run() -> None:
        server, health, port = build_async_server(
            [app.binding()],
            address=f"{settings.bind_host}:{settings.metrics_port}",
            port_setting="INFRAWATCH_METRICS_PORT",
            max_message_bytes=settings.max_message_bytes,
            unreachable=unreachable_database_errors(),
            tls=server_tls_from(settings),
            telemetry=RpcTelemetry(registry),
        )
        event(
            _log,
            "metrics service listening",
            port=port,
            database=engine.url.render_as_string(hide_password=True),
            agents=settings.agents_address,
            max_streams=config.max_streams,
            ingest_workers=config.ingest_workers,
            tls=tls_summary(settings),
            protect_reads=settings.protect_reads,
        )
        prom = prom_server()
        serving = [asyncio.create_task(prom.serve(sockets=[prom_listener]))] if prom and prom_listener else []
        try:
            await serve_async(
                server,
                health,
                service_names=[SERVICE_NAME],
                prepare=prepare,
                is_healthy=lambda: check_database(engine),
                stop=stop,
                grace_seconds=settings.shutdown_grace,
                blocking=blocking,
            )
        finally:
            if prom is not None:
                prom.should_exit = True  # after gRPC has drained: HTTP requests finish the same way
            await asyncio.gather(*serving)

    endpoint = serve_or_exit(registry, settings.bind_host, settings.metrics_telemetry_port, "metrics")
    try:
        asyncio.run(run())
    finally:
        stop.set()  # releases the lifecycle threads waiting for it, whatever ended the run
        if endpoint is not None:
            endpoint.close()
        app.close()
        blocking.shutdown(wait=False)
        agents_channel.close()
        if alerts_channel is not None:
            alerts_channel.close()
        engine.dispose()


if __name__ == "__main__":
    main()
