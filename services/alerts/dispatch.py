"""Delivers due notifications: every tick it plans with `notify.plan` over the engine's alerts,
the active silences and the routes, posts each due group to its receiver's webhook on a pool (a
slow or broken receiver never blocks evaluation or other receivers), and persists what each
receiver was told after every successful delivery."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Executor

from agent.logs import event
from services.alerts import notify
from services.alerts.domain import Alert, Silence
from services.alerts.engine import AlertEngine
from services.alerts.notify import Delivery, GroupState
from services.alerts.ports import AlertStore
from services.alerts.rules import Receiver

_log = logging.getLogger("infrawatch.alerts.notify")


def post_webhook(receiver: Receiver, body: dict[str, object]) -> None:
    """POST the JSON body; raises OSError (including urllib's errors) unless the answer is 2xx."""
    request = urllib.request.Request(
        receiver.webhook_url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "InfraWatch-Alerts/0.1"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=receiver.timeout_s) as response:
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status}")


def silenced_by(alert: Alert, silences: list[Silence], now_ms: int) -> list[str]:
    return [s.silence_id for s in silences if s.silences(alert.labels, now_ms)]


class Dispatcher:
    def __init__(
        self,
        engine: AlertEngine,
        store: AlertStore,
        now_ms: Callable[[], int],
        pool: Executor,
        post: Callable[[Receiver, dict[str, object]], None] = post_webhook,
        tick_s: float = 0.5,
    ) -> None:
        self._engine = engine
        self._store = store
        self._now_ms = now_ms
        self._pool = pool
        self._post = post
        self._tick_s = tick_s
        self._lock = threading.Lock()
        self._groups: dict[str, GroupState] = {}
        self._sending: set[str] = set()
        self.silences: list[Silence] = []

    def start(self) -> None:
        self._groups = {group.group_key: group for group in self._store.load_groups()}
        self.refresh_silences()

    def refresh_silences(self) -> None:
        self.silences = self._store.silences(ended_after_ms=self._now_ms())

    def tick(self) -> None:
        now = self._now_ms()
        rules = self._engine.rules
        alerts = self._engine.alerts()
        silenced = {a.fingerprint for a in alerts if silenced_by(a, self.silences, now)}
        with self._lock:
            due, kept = notify.plan(alerts, silenced, rules.routes, self._groups, now)
            for key in set(self._groups) - set(kept):
                self._store.delete_group(key)
            for key, group in kept.items():
                if self._groups.get(key) is None:
                    self._store.save_group(group)
            self._groups = kept
            due = [d for d in due if d.group.group_key not in self._sending]
            self._sending.update(d.group.group_key for d in due)
        for delivery in due:
            receiver = rules.receivers.get(delivery.route.receiver)
            if receiver is not None:
                self._pool.submit(self._deliver, delivery, receiver)

    def _deliver(self, delivery: Delivery, receiver: Receiver) -> None:
        body = notify.webhook_body(delivery)
        try:
            self._post(receiver, body)
        except (OSError, ValueError) as exc:
            outcome = notify.failed(delivery, self._now_ms())
            event(
                _log,
                "notification failed; will retry",
                logging.WARNING,
                receiver=receiver.name,
                group=delivery.group.group_key,
                error=str(exc),
                retry_in_s=round((outcome.next_attempt_ms - self._now_ms()) / 1000, 1),
            )
        else:
            outcome = notify.delivered(delivery, self._now_ms())
            event(
                _log,
                "notification sent",
                receiver=receiver.name,
                status=body["status"],
                alerts=len(delivery.alerts),
                group=delivery.group.group_key,
            )
        with self._lock:
            self._sending.discard(outcome.group_key)
            if outcome.group_key in self._groups:
                self._groups[outcome.group_key] = outcome
                self._store.save_group(outcome)

    def run(self, stop: threading.Event) -> None:
        refreshed = 0
        while not stop.wait(self._tick_s):
            try:
                refreshed += 1
                if refreshed % 10 == 0:
                    self.refresh_silences()
                self.tick()
            except Exception:
                _log.exception("notification tick failed")
