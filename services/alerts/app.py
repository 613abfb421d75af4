"""Wiring of the alerts context, shared by its composition root, the tests and the benchmark:
engine, channels and settings in; the engine, dispatcher and servicer out."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from infrawatch.alerts.v1 import alerts_pb2_grpc
from services.alerts.alertmanager import AlertingConfig, AlertmanagerNotifier, NotificationTelemetry
from services.alerts.clients import AgentsClient, MetricsClient
from services.alerts.dispatch import Dispatcher
from services.alerts.engine import AlertEngine
from services.alerts.leadership import Leadership, SoleReplica
from services.alerts.rules import RuleSet
from services.alerts.service import AlertsContext
from services.alerts.servicer import SERVICE_NAME, AlertServicer
from services.alerts.store import SqlAlertStore
from services.alerts.watch import AlertHub
from services.common.credentials import Credentials
from services.common.server import AsyncServiceBinding

_log = logging.getLogger("infrawatch.alerts")


@dataclass
class AlertsApp:
    engine: AlertEngine
    dispatcher: Dispatcher
    alertmanager: AlertmanagerNotifier
    context: AlertsContext
    servicer: AlertServicer
    pools: tuple[ThreadPoolExecutor, ...]
    leadership: Leadership

    def binding(self) -> AsyncServiceBinding:
        return AsyncServiceBinding(
            SERVICE_NAME, lambda server: alerts_pb2_grpc.add_AlertServiceServicer_to_server(self.servicer, server)
        )

    def start(self, rules: RuleSet, stop: threading.Event) -> None:
        """Load the persisted alerts and notification state, then evaluate and notify until `stop`
        while this replica leads (and follow the leader's alerts while it does not)."""
        self.engine.leading = self.leadership.lead()
        self.engine.start_with(rules)
        self.dispatcher.start()
        for target, name in (
            (self.engine.run, "rules"),
            (self.dispatcher.run, "dispatcher"),
            (self.alertmanager.run, "alertmanager"),
            (self._follow_leadership, "leadership"),
        ):
            threading.Thread(target=target, args=(stop,), name=name, daemon=True).start()

    def _follow_leadership(self, stop: threading.Event) -> None:
        """Every second: take over when the lead is free, step down when it is lost, and while
        following, show the leader's alerts."""
        while not stop.wait(1.0):
            try:
                leads = self.leadership.lead()
                if leads and not self.engine.leading:
                    self.dispatcher.start()
                    self.alertmanager.forget_sent()
                    self.engine.take_over()
                elif not leads:
                    self.engine.leading = False
                    self.engine.refresh_from_store()
            except Exception:
                _log.exception("following the leadership failed")
        self.leadership.release()

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
    alerting: AlertingConfig | None = None,
    external_url: str = "",
    resend_delay_s: float = 60.0,
    registry: CollectorRegistry | None = None,
    leadership: Leadership | None = None,
) -> AlertsApp:
    """`registry` receives the notification telemetry (a private one when not given)."""
    store = SqlAlertStore(engine)
    hub = AlertHub()
    alerting = alerting or AlertingConfig()
    telemetry = NotificationTelemetry(registry if registry is not None else CollectorRegistry())
    evaluation = ThreadPoolExecutor(evaluation_workers, thread_name_prefix="evaluate")
    # Enough threads for every receiver's in-flight deliveries; each is bounded by its timeout.
    delivery = ThreadPoolExecutor(16, thread_name_prefix="notify")
    to_alertmanagers = ThreadPoolExecutor(max(1, len(alerting.alertmanagers)), thread_name_prefix="alertmanager")
    api = ThreadPoolExecutor(4, thread_name_prefix="api")
    alert_engine = AlertEngine(
        store,
        MetricsClient(metrics_channel, credentials.service_token, downstream_timeout_s, stop),
        AgentsClient(agents_channel, credentials.service_token, downstream_timeout_s, stop),
        hub,
        now_ms,
        evaluation,
        external_labels=alerting.external_labels,
        external_url=external_url,
    )
    dispatcher = Dispatcher(
        alert_engine, store, now_ms, delivery, tick_s=tick_s, telemetry=telemetry, external_url=external_url
    )
    notifier = AlertmanagerNotifier(
        alert_engine.alerts,
        alert_engine.expression_of,
        alerting,
        now_ms,
        to_alertmanagers,
        telemetry,
        external_url=external_url,
        resend_delay_s=resend_delay_s,
        longest_interval_s=lambda: max((g.interval_s for g in alert_engine.rules.groups), default=60.0),
        leading=lambda: alert_engine.leading,
    )
    context = AlertsContext(
        engine=alert_engine,
        dispatcher=dispatcher,
        store=store,
        engine_hub=hub,
        rules_path=rules_path,
        now_ms=now_ms,
        credentials=credentials,
    )
    return AlertsApp(
        alert_engine,
        dispatcher,
        notifier,
        context,
        AlertServicer(context, api),
        (evaluation, delivery, to_alertmanagers, api),
        leadership or SoleReplica(),
    )
