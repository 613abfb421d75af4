"""Composition root of the alerts service, and `python -m services.alerts check FILE...`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agent.logs import configure_logging, event
from services.alerts import service
from services.alerts.alertmanager import read_alerting_config
from services.alerts.app import build_alerts_app
from services.alerts.leadership import leadership_for
from services.alerts.rules import RulesError, load_rules
from services.alerts.service import read_rules
from services.alerts.servicer import SERVICE_NAME
from services.alerts.settings import ALERTS_VARS, AlertsSettings
from services.alerts.telemetry import AlertsCollector
from services.common.clock import wall_clock_ms
from services.common.config import settings_from_command_line
from services.common.credentials import Credentials
from services.common.db import check_database, create_db_engine, database_url, migrate, unreachable_database_errors
from services.common.errors import DomainError
from services.common.server import build_async_server, install_stop_signals, serve_async
from services.common.telemetry import RpcTelemetry, new_registry, serve_or_exit, watch_pool
from services.common.tls import client_tls_from, server_tls_from, tls_summary

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_alerts"

_log = logging.getLogger("infrawatch.alerts")


def check(files: list[str]) -> int:
    """Validate rules files like `promtool check rules`: every problem with file, line and rule."""
    if not files:
        print("usage: python -m services.alerts check FILE [FILE...]", file=sys.stderr)
        return 2
    failed = False
    for name in files:
        try:
            rules = load_rules(Path(name).read_text(), name)
        except OSError as exc:
            print(f"{name}: cannot read: {exc.strerror}", file=sys.stderr)
            failed = True
        except RulesError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            failed = True
        else:
            print(f"{name}: OK: {len(rules.groups)} groups, {len(rules.rules)} rules, {len(rules.routes)} routes")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "check":
        return check(argv[1:])
    settings = settings_from_command_line(
        "python -m services.alerts",
        "InfraWatch alerts service: evaluates alerting rules over metrics and agent liveness, keeps alert "
        "state, sends webhook notifications and manages silences (infrawatch.alerts.v1.AlertService). "
        "`python -m services.alerts check FILE...` validates rules files and exits non-zero on any problem.",
        ALERTS_VARS,
        AlertsSettings.from_env,
        argv,
    )
    configure_logging(settings.log_level, "alerts")
    rules_path = Path(settings.alert_rules)
    try:
        rules = read_rules(rules_path)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"python -m services.alerts: {rules_path} is invalid; not starting", file=sys.stderr)
        return 2
    try:
        alerting = read_alerting_config(settings.alerting_config)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(
            f"python -m services.alerts: INFRAWATCH_ALERTING_CONFIG {settings.alerting_config} is invalid",
            file=sys.stderr,
        )
        return 2

    stop = install_stop_signals()
    reload_requested = threading.Event()
    signal.signal(signal.SIGHUP, lambda _signum, _frame: reload_requested.set())
    engine = create_db_engine(database_url(settings.database_url, settings.data_dir, "alerts"))
    tls = client_tls_from(settings)
    metrics_channel = tls.channel(settings.metrics_address)
    agents_channel = tls.channel(settings.agents_address)
    registry = new_registry()
    app = build_alerts_app(
        engine,
        metrics_channel,
        agents_channel,
        rules_path,
        Credentials(
            operator_token=settings.operator_token,
            service_token=settings.service_token,
            protect_reads=settings.protect_reads,
        ),
        now_ms=wall_clock_ms,
        stop=stop,
        downstream_timeout_s=settings.downstream_timeout,
        evaluation_workers=settings.evaluation_workers,
        alerting=alerting,
        external_url=settings.external_url,
        resend_delay_s=settings.alert_resend_delay,
        registry=registry,
        leadership=leadership_for(engine),
    )
    blocking = ThreadPoolExecutor(2, thread_name_prefix="lifecycle")
    watch_pool(registry, engine)
    registry.register(AlertsCollector(app.engine))

    def reload_on_sighup() -> None:
        while not stop.is_set():
            if reload_requested.wait(0.5):
                reload_requested.clear()
                with contextlib.suppress(DomainError):  # logged; the previous rules keep running
                    service.reload_from_file(app.context)

    def prepare() -> None:
        migrate(engine, MIGRATIONS, VERSION_TABLE)
        app.start(rules, stop)
        threading.Thread(target=reload_on_sighup, name="sighup", daemon=True).start()

    async def run() -> None:
        server, health, port = build_async_server(
            [app.binding()],
            address=f"{settings.bind_host}:{settings.alerts_port}",
            port_setting="INFRAWATCH_ALERTS_PORT",
            max_message_bytes=settings.max_message_bytes,
            unreachable=unreachable_database_errors(),
            tls=server_tls_from(settings),
            telemetry=RpcTelemetry(registry),
        )
        event(
            _log,
            "alerts service listening",
            port=port,
            database=engine.url.render_as_string(hide_password=True),
            rules=str(rules_path),
            groups=len(rules.groups),
            rule_count=len(rules.rules),
            receivers=len(rules.receivers),
            alertmanagers=[target.url for target in alerting.alertmanagers],
            metrics=settings.metrics_address,
            agents=settings.agents_address,
            tls=tls_summary(settings),
        )
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

    endpoint = serve_or_exit(registry, settings.bind_host, settings.alerts_telemetry_port, "alerts")
    try:
        asyncio.run(run())
    finally:
        if endpoint is not None:
            endpoint.close()
        app.close()
        blocking.shutdown(wait=False)
        metrics_channel.close()
        agents_channel.close()
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
