"""Composition root of the agents service: settings, engine, servicer, server."""

from __future__ import annotations

import logging
from pathlib import Path

from agent.logs import configure_logging, event
from infrawatch.agents.v1 import agents_pb2_grpc
from services.agents import service
from services.agents.domain import LivenessPolicy
from services.agents.repository import SqlUnitOfWork
from services.agents.service import AgentsContext
from services.agents.servicer import SERVICE_NAME, AgentServicer
from services.agents.settings import AGENTS_VARS, AgentsSettings
from services.common.clock import wall_clock_ms
from services.common.config import settings_from_command_line
from services.common.credentials import Credentials
from services.common.db import check_database, create_db_engine, database_url, migrate, unreachable_database_errors
from services.common.server import ServiceBinding, build_server, install_stop_signals, serve
from services.common.telemetry import RpcTelemetry, new_registry, serve_or_exit, watch_pool
from services.common.tls import server_tls_from, tls_summary

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_agents"

_log = logging.getLogger("infrawatch.agents")


def main(argv: list[str] | None = None) -> None:
    settings = settings_from_command_line(
        "python -m services.agents",
        "InfraWatch agents service: registration, heartbeats, inventory, liveness and agent "
        "credentials, over gRPC (infrawatch.agents.v1.AgentService).",
        AGENTS_VARS,
        AgentsSettings.from_env,
        argv,
    )
    configure_logging(settings.log_level, "agents")

    engine = create_db_engine(database_url(settings.database_url, settings.data_dir, "agents"))
    ctx = AgentsContext(
        uow=lambda: SqlUnitOfWork(engine),
        now_ms=wall_clock_ms,
        policy=LivenessPolicy(
            heartbeat_interval_s=max(1, round(settings.heartbeat_interval)),
            stale_after_intervals=settings.stale_after_intervals,
            offline_after_intervals=settings.offline_after_intervals,
        ),
        credentials=Credentials(
            operator_token=settings.operator_token,
            service_token=settings.service_token,
            enrollment_token=settings.enrollment_token,
            protect_reads=settings.protect_reads,
        ),
    )
    servicer = AgentServicer(ctx)
    registry = new_registry()
    watch_pool(registry, engine)
    server, health, port = build_server(
        [ServiceBinding(SERVICE_NAME, lambda s: agents_pb2_grpc.add_AgentServiceServicer_to_server(servicer, s))],
        address=f"{settings.bind_host}:{settings.agents_port}",
        port_setting="INFRAWATCH_AGENTS_PORT",
        max_message_bytes=settings.max_message_bytes,
        unreachable=unreachable_database_errors(),
        tls=server_tls_from(settings),
        telemetry=RpcTelemetry(registry),
    )
    event(
        _log,
        "agents service listening",
        port=port,
        database=engine.url.render_as_string(hide_password=True),
        tls=tls_summary(settings),
        registration="open with the enrolment token" if settings.enrollment_token else "closed (no enrolment token)",
        protect_reads=settings.protect_reads,
    )

    def prepare() -> None:
        migrate(engine, MIGRATIONS, VERSION_TABLE)
        downtime = service.resume_liveness(ctx)
        if downtime.paused_ms:
            event(
                _log,
                "liveness resumes after a downtime: heartbeats from before the start count as that much later, "
                "so no host looks late because of this restart",
                downtime_s=round(downtime.paused_ms / 1000, 1),
            )

    stop = install_stop_signals()
    endpoint = serve_or_exit(registry, settings.bind_host, settings.agents_telemetry_port, "agents")
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
        if endpoint is not None:
            endpoint.close()
        engine.dispose()


if __name__ == "__main__":
    main()
