"""Delivery to Alertmanager, as Prometheus does it, so that an existing Alertmanager routes,
groups, inhibits and silences InfraWatch's alerts exactly as it does Prometheus'.

The alerting configuration is Prometheus' own shape (`INFRAWATCH_ALERTING_CONFIG`, a subset of
prometheus.yml): `global.external_labels` and `alerting.alertmanagers` with `static_configs`
targets, `scheme`, `path_prefix`, `timeout` and `api_version: v2`.

Every tick the notifier sends each Alertmanager the alerts that need it, as Prometheus'
notifier decides: a firing alert when it starts firing and again every resend delay (1m, its
`endsAt` four resend delays or evaluation intervals ahead, so Alertmanager keeps it only while
InfraWatch keeps saying so), a resolved alert when it resolves and then at each resend while it
is still listed (15 min). Pending alerts are never sent. Alertmanager deduplicates, so a resend
costs nothing and a lost POST heals at the next one. Each Alertmanager has its own delivery in
flight at most, under a deadline for the whole POST, so a slow one holds back no other; a 4xx
is logged (the alerts are refused, resending the same cannot help) and not retried beyond the
ordinary resend.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram

from agent.logs import event
from services.alerts.domain import Alert, State
from services.alerts.http_post import PostFailed, post_json
from services.alerts.rules import RulesError, YamlReader, compose_yaml
from services.common.labels import is_label_name
from services.common.timestamps import rfc3339

_log = logging.getLogger("infrawatch.alerts.alertmanager")
DEFAULT_RESEND_DELAY_S = 60.0


@dataclass(frozen=True)
class AlertmanagerTarget:
    url: str
    """The full URL alerts are posted to (…/api/v2/alerts)."""
    timeout_s: float = 10.0


@dataclass(frozen=True)
class AlertingConfig:
    external_labels: dict[str, str] = field(default_factory=dict)
    alertmanagers: tuple[AlertmanagerTarget, ...] = ()


def load_alerting_config(text: str, filename: str) -> AlertingConfig:
    """The alerting configuration in `text`; RulesError lists every problem with its line."""
    reader = YamlReader(filename)
    root = compose_yaml(text, filename)
    if root is None:
        return AlertingConfig()
    top = reader.mapping(root, "file", {"global", "alerting"}) or {}
    external: dict[str, str] = {}
    if "global" in top:
        global_keys = reader.mapping(top["global"], "global", {"external_labels", "evaluation_interval"}) or {}
        if "external_labels" in global_keys:
            external = dict(reader.labels(global_keys["external_labels"], "global: external_labels", templated=False))
            for name in external:
                if not is_label_name(name) or name.startswith("__"):
                    reader.problem(
                        global_keys["external_labels"], "global: external_labels", f"{name!r} is not allowed"
                    )
    targets: list[AlertmanagerTarget] = []
    if "alerting" in top:
        alerting = reader.mapping(top["alerting"], "alerting", {"alertmanagers"}) or {}
        for item in (
            reader.sequence(alerting["alertmanagers"], "alerting: alertmanagers") if "alertmanagers" in alerting else []
        ):
            targets.extend(_alertmanager(reader, item))
    if reader.problems:
        raise RulesError(reader.problems)
    return AlertingConfig(external, tuple(targets))


def _alertmanager(reader: YamlReader, node: yaml.Node) -> list[AlertmanagerTarget]:
    where = "alerting: alertmanagers"
    keys = reader.mapping(node, where, {"static_configs", "scheme", "path_prefix", "timeout", "api_version"}) or {}
    scheme = reader.text(keys.get("scheme"), f"{where}: scheme", required=False) or "http"
    if scheme not in ("http", "https"):
        reader.problem(keys.get("scheme"), where, f"scheme {scheme!r} is not http or https")
    version = reader.text(keys.get("api_version"), f"{where}: api_version", required=False) or "v2"
    if version != "v2":
        reader.problem(keys.get("api_version"), where, "only api_version v2 exists in current Alertmanagers")
    prefix = reader.text(keys.get("path_prefix"), f"{where}: path_prefix", required=False) or "/"
    timeout = reader.duration(keys.get("timeout"), f"{where}: timeout", 10.0)
    found = []
    if "static_configs" not in keys:
        reader.problem(node, where, "needs `static_configs:` with `targets:` (host:port of each Alertmanager)")
    for static in (
        reader.sequence(keys["static_configs"], f"{where}: static_configs") if "static_configs" in keys else []
    ):
        fields = reader.mapping(static, f"{where}: static_configs", {"targets", "labels"}) or {}
        for target in reader.sequence(fields["targets"], f"{where}: targets") if "targets" in fields else []:
            address = reader.text(target, f"{where}: targets")
            if address and ("/" in address or not urllib.parse.urlsplit(f"//{address}").hostname):
                reader.problem(target, f"{where}: targets", f"{address!r} is not host:port")
                continue
            base = "/".join(part for part in (prefix.strip("/"), "api/v2/alerts") if part)
            url = f"{scheme}://{address}/{base}"
            found.append(AlertmanagerTarget(url, timeout))
    return found


def read_alerting_config(path: str) -> AlertingConfig:
    if not path:
        return AlertingConfig()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise RulesError([f"{path}: cannot read the alerting configuration: {exc.strerror}"]) from None
    return load_alerting_config(text, path)


def generator_url(external_url: str, expr: str) -> str:
    """Where a person sees the rule's expression: the console's Explore page."""
    if not external_url:
        return ""
    return f"{external_url.rstrip('/')}/explore?query={urllib.parse.quote(expr, safe='')}"


class NotificationTelemetry:
    """As Alertmanager's own: notifications sent and failed, and their latency, by integration and receiver."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "infrawatch_notifications",
            "Notifications attempted, by integration (alertmanager, webhook) and receiver.",
            ["integration", "receiver"],
            registry=registry,
        )
        self.failed = Counter(
            "infrawatch_notifications_failed",
            "Notifications that failed, by integration, receiver and reason (timeout, refused: a 4xx, error).",
            ["integration", "receiver", "reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "infrawatch_notification_latency_seconds",
            "Time to deliver a notification, by integration and receiver.",
            ["integration", "receiver"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )

    def observe(self, integration: str, receiver: str, began: float, error: BaseException | None) -> None:
        self.sent.labels(integration, receiver).inc()
        self.latency.labels(integration, receiver).observe(time.perf_counter() - began)
        if error is not None:
            reason = "timeout" if isinstance(error, TimeoutError) else "error"
            if isinstance(error, PostFailed) and not error.retryable:
                reason = "refused"
            self.failed.labels(integration, receiver, reason).inc()


def alertmanager_alert(
    alert: Alert, external_labels: dict[str, str], generator: str, now_ms: int, valid_for_ms: int
) -> dict[str, object]:
    """One alert as Alertmanager's API v2 takes it (postableAlert)."""
    labels = {**external_labels, **alert.labels}  # the alert's own labels win, as in Prometheus
    ends = alert.resolved_at_ms if alert.state is State.RESOLVED else now_ms + valid_for_ms
    return {
        "labels": labels,
        "annotations": alert.annotations,
        "startsAt": rfc3339(alert.active_since_ms),
        "endsAt": rfc3339(ends),
        "generatorURL": generator,
    }


class AlertmanagerNotifier:
    def __init__(
        self,
        alerts: Callable[[], list[Alert]],
        expression_of: Callable[[str], str],
        config: AlertingConfig,
        now_ms: Callable[[], int],
        pool: Executor,
        telemetry: NotificationTelemetry,
        *,
        external_url: str = "",
        resend_delay_s: float = DEFAULT_RESEND_DELAY_S,
        longest_interval_s: Callable[[], float] = lambda: 60.0,
        post: Callable[[str, object, float], object] = post_json,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self._alerts = alerts
        self._expression_of = expression_of
        self._config = config
        self._now_ms = now_ms
        self._pool = pool
        self._telemetry = telemetry
        self._external_url = external_url
        self._resend_ms = int(resend_delay_s * 1000)
        self._longest_interval_s = longest_interval_s
        self._post = post
        self._leading = leading
        self._sent: dict[str, dict[str, tuple[int, State]]] = {}  # target -> fingerprint -> (when, state)
        self._in_flight: set[str] = set()
        self._failures: dict[str, int] = {}
        self._next_attempt_ms: dict[str, int] = {}  # after a failure: backoff 1 s doubling to 30 s
        self._lock = threading.Lock()

    @property
    def targets(self) -> tuple[AlertmanagerTarget, ...]:
        return self._config.alertmanagers

    def due(self, target: str, alerts: list[Alert], now: int) -> list[Alert]:
        """The alerts to send `target` now (Prometheus' needsSending): never pending; a state it
        was not told yet; otherwise once the resend delay has passed."""
        told = self._sent.get(target, {})
        due = []
        for alert in alerts:
            if alert.state is State.PENDING:
                continue
            sent = told.get(alert.fingerprint)
            if sent is None or sent[1] is not alert.state or now - sent[0] >= self._resend_ms:
                due.append(alert)
        return due

    def forget_sent(self) -> None:
        """A new leader tells every Alertmanager everything once (Alertmanager deduplicates)."""
        with self._lock:
            self._sent.clear()

    def tick(self) -> None:
        if not self._leading():
            return
        now = self._now_ms()
        alerts = self._alerts()
        listed = {alert.fingerprint for alert in alerts}
        valid_for_ms = int(4 * max(self._resend_ms / 1000, self._longest_interval_s()) * 1000)
        for target in self._config.alertmanagers:
            with self._lock:
                if target.url in self._in_flight or now < self._next_attempt_ms.get(target.url, 0):
                    continue  # the previous POST is still within its deadline, or backing off
                told = self._sent.setdefault(target.url, {})
                for fingerprint in set(told) - listed:
                    del told[fingerprint]
                due = self.due(target.url, alerts, now)
                if not due:
                    continue
                self._in_flight.add(target.url)
            body = [
                alertmanager_alert(
                    alert,
                    self._config.external_labels,
                    generator_url(self._external_url, self._expression_of(alert.rule)),
                    now,
                    valid_for_ms,
                )
                for alert in due
            ]
            self._pool.submit(self._deliver, target, body, [(a.fingerprint, a.state) for a in due], now)

    def _deliver(
        self, target: AlertmanagerTarget, body: list[dict[str, object]], sent: list[tuple[str, State]], now: int
    ) -> None:
        """POST to one Alertmanager; what it took counts as told (a failure is tried again next tick)."""
        began = time.perf_counter()
        error: BaseException | None = None
        try:
            self._post(target.url, body, target.timeout_s)
        except OSError as exc:
            error = exc
            refused = isinstance(exc, PostFailed) and not exc.retryable
            event(
                _log,
                "Alertmanager refused the alerts; they go again only at the next resend"
                if refused
                else "Alertmanager did not take the alerts; trying again",
                logging.ERROR if refused else logging.WARNING,
                alertmanager=target.url,
                alerts=len(body),
                error=str(exc),
            )
        finally:
            self._telemetry.observe("alertmanager", target.url, began, error)
        retry = error is not None and not (isinstance(error, PostFailed) and not error.retryable)
        with self._lock:
            if retry:
                failures = self._failures.get(target.url, 0) + 1
                self._failures[target.url] = failures
                self._next_attempt_ms[target.url] = self._now_ms() + int(min(30.0, 2.0 ** (failures - 1)) * 1000)
            else:
                self._failures.pop(target.url, None)
                told = self._sent.setdefault(target.url, {})
                for fingerprint, state in sent:
                    told[fingerprint] = (now, state)
            self._in_flight.discard(target.url)
        if error is None:
            event(_log, "alerts sent to Alertmanager", logging.DEBUG, alertmanager=target.url, alerts=len(body))

    def run(self, stop: threading.Event, tick_s: float = 1.0) -> None:
        while not stop.wait(tick_s):
            try:
                self.tick()
            except Exception:
                _log.exception("Alertmanager tick failed")
