"""Wiring of the alerts context, shared by its composition root, the tests and the benchmark:
engine, channels and settings in; the engine, dispatcher and servicer out."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from sqlalchemy import Engine

from infrawatch.alerts.v1 import alerts_pb2_grpc
from services.alerts.clients import AgentsClient, MetricsClient
from services.alerts.dispatch import Dispatcher
from services.alerts.engine import AlertEngine
from services.alerts.rules import RuleSet
from services.alerts.service import AlertsContext
from services.alerts.servicer import SERVICE_NAME, AlertServicer
from services.alerts.store import SqlAlertStore
from services.alerts.watch import AlertHub
from services.common.credentials import Credentials
from services.common.server import AsyncServiceBinding


@dataclass
class AlertsApp:
    engine: AlertEngine
    dispatcher: Dispatcher
    context: AlertsContext
    servicer: AlertServicer
    pools: tuple[ThreadPoolExecutor, ...]

    def binding(self) -> AsyncServiceBinding:
        return AsyncServiceBinding(
            SERVICE_NAME, lambda server: alerts_pb2_grpc.add_AlertServiceServicer_to_server(self.servicer, server)
        )

    def start(self, rules: RuleSet, stop: threading.Event) -> None:
        """Load the persisted alerts and notification state, then evaluate and notify until `stop`."""
        self.engine.start_with(rules)
        self.dispatcher.start()
        for target, name in ((self.engine.run, "rules"), (self.dispatcher.run, "dispatcher")):
            threading.Thread(target=target, args=(stop,), name=name, daemon=True).start()

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(wait=False, cancel_futures=True)


def build_alerts_app(
    engine: Engine,
    metrics_channel: grpc.Channel,
    agents_channel: grpc.Channel,
    rules_path: Path,
    credentials: Credentials,
    *,
    now_ms: Callable[[], int],
    stop: threading.Event,
    downstream_timeout_s: float = 5.0,
    evaluation_workers: int = 8,
    tick_s: float = 0.5,
) -> AlertsApp:
    store = SqlAlertStore(engine)
    hub = AlertHub()
    evaluation = ThreadPoolExecutor(evaluation_workers, thread_name_prefix="evaluate")
    delivery = ThreadPoolExecutor(4, thread_name_prefix="notify")
    api = ThreadPoolExecutor(4, thread_name_prefix="api")
    alert_engine = AlertEngine(
        store,
        MetricsClient(metrics_channel, credentials.service_token, downstream_timeout_s, stop),
        AgentsClient(agents_channel, credentials.service_token, downstream_timeout_s, stop),
        hub,
        now_ms,
        evaluation,
    )
    dispatcher = Dispatcher(alert_engine, store, now_ms, delivery, tick_s=tick_s)
    context = AlertsContext(
        engine=alert_engine,
        dispatcher=dispatcher,
        store=store,
        engine_hub=hub,
        rules_path=rules_path,
        now_ms=now_ms,
        credentials=credentials,
    )
    return AlertsApp(alert_engine, dispatcher, context, AlertServicer(context, api), (evaluation, delivery, api))
