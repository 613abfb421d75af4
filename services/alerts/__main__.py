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
from infrawatch.alerts.v1 import alerts_pb2_grpc
from services.alerts import service
from services.alerts.clients import AgentsClient, MetricsClient
from services.alerts.dispatch import Dispatcher
from services.alerts.engine import AlertEngine
from services.alerts.rules import RulesError, load_rules
from services.alerts.service import AlertsContext, read_rules
from services.alerts.servicer import SERVICE_NAME, AlertServicer
from services.alerts.settings import ALERTS_VARS, AlertsSettings
from services.alerts.store import SqlAlertStore
from services.alerts.watch import AlertHub
from services.common.clock import wall_clock_ms
from services.common.config import settings_from_command_line
from services.common.credentials import Credentials
from services.common.db import check_database, create_db_engine, database_url, migrate, unreachable_database_errors
from services.common.errors import DomainError
from services.common.server import AsyncServiceBinding, build_async_server, install_stop_signals, serve_async
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

    stop = install_stop_signals()
    reload_requested = threading.Event()
    signal.signal(signal.SIGHUP, lambda _signum, _frame: reload_requested.set())
    engine = create_db_engine(database_url(settings.database_url, settings.data_dir, "alerts"))
    tls = client_tls_from(settings)
    metrics_channel = tls.channel(settings.metrics_address)
    agents_channel = tls.channel(settings.agents_address)
    store = SqlAlertStore(engine)
    hub = AlertHub()
    evaluation = ThreadPoolExecutor(settings.evaluation_workers, thread_name_prefix="evaluate")
    delivery = ThreadPoolExecutor(4, thread_name_prefix="notify")
    blocking = ThreadPoolExecutor(4, thread_name_prefix="api")
    alert_engine = AlertEngine(
        store,
        MetricsClient(metrics_channel, settings.service_token, settings.downstream_timeout, stop),
        AgentsClient(agents_channel, settings.service_token, settings.downstream_timeout, stop),
        hub,
        wall_clock_ms,
        evaluation,
    )
    dispatcher = Dispatcher(alert_engine, store, wall_clock_ms, delivery)
    ctx = AlertsContext(
        engine=alert_engine,
        dispatcher=dispatcher,
        store=store,
        engine_hub=hub,
        rules_path=rules_path,
        now_ms=wall_clock_ms,
        credentials=Credentials(
            operator_token=settings.operator_token,
            service_token=settings.service_token,
            protect_reads=settings.protect_reads,
        ),
    )
    servicer = AlertServicer(ctx, blocking)

    def reload_on_sighup() -> None:
        while not stop.is_set():
            if reload_requested.wait(0.5):
                reload_requested.clear()
                with contextlib.suppress(DomainError):  # logged; the previous rules keep running
                    service.reload_from_file(ctx)

    def prepare() -> None:
        migrate(engine, MIGRATIONS, VERSION_TABLE)
        alert_engine.start_with(rules)
        dispatcher.start()
        for target, name in ((alert_engine.run, "rules"), (dispatcher.run, "dispatcher")):
            threading.Thread(target=target, args=(stop,), name=name, daemon=True).start()
        threading.Thread(target=reload_on_sighup, name="sighup", daemon=True).start()

    async def run() -> None:
        server, health, port = build_async_server(
            [
                AsyncServiceBinding(
                    SERVICE_NAME, lambda s: alerts_pb2_grpc.add_AlertServiceServicer_to_server(servicer, s)
                )
            ],
            address=f"{settings.bind_host}:{settings.alerts_port}",
            max_message_bytes=settings.max_message_bytes,
            unreachable=unreachable_database_errors(),
            tls=server_tls_from(settings),
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

    try:
        asyncio.run(run())
    finally:
        for pool in (evaluation, delivery, blocking):
            pool.shutdown(wait=False, cancel_futures=True)
        metrics_channel.close()
        agents_channel.close()
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
