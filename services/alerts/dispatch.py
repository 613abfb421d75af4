"""Delivers due notifications: every tick it plans with `notify.plan` over the engine's alerts,
the active silences and the routes, posts each due group to its receiver's webhook on a pool,
and persists what each receiver was told after every successful delivery.

No receiver can hold another back: each POST has a deadline for the whole exchange (a receiver
that trickles its answer is cut off at its timeout), and a receiver has at most
MAX_IN_FLIGHT_PER_RECEIVER deliveries in flight, so a slow one never takes the pool. A 4xx
answer (other than 408/429) says the notification itself is refused: it is logged and counted,
not retried; anything else is retried with backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor

from agent.logs import event
from services.alerts import notify
from services.alerts.alertmanager import NotificationTelemetry, generator_url
from services.alerts.domain import Alert, Silence
from services.alerts.engine import AlertEngine
from services.alerts.http_post import PostFailed, post_json
from services.alerts.notify import Delivery, GroupState
from services.alerts.ports import AlertStore
from services.alerts.rules import Receiver

_log = logging.getLogger("infrawatch.alerts.notify")
MAX_IN_FLIGHT_PER_RECEIVER = 2


def post_webhook(receiver: Receiver, body: dict[str, object]) -> None:
    """POST the JSON body within the receiver's timeout; raises OSError unless the answer is 2xx."""
    post_json(receiver.webhook_url, body, receiver.timeout_s)


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
        telemetry: NotificationTelemetry | None = None,
        external_url: str = "",
    ) -> None:
        self._engine = engine
        self._store = store
        self._now_ms = now_ms
        self._pool = pool
        self._post = post
        self._tick_s = tick_s
        self._lock = threading.Lock()
        self._groups: dict[str, GroupState] = {}
        self._sending: dict[str, str] = {}  # group key -> receiver, while its delivery is in flight
        self._telemetry = telemetry
        self._external_url = external_url
        self.silences: list[Silence] = []

    def start(self) -> None:
        self._groups = {group.group_key: group for group in self._store.load_groups()}
        self.refresh_silences()

    def refresh_silences(self) -> None:
        self.silences = self._store.silences(ended_after_ms=self._now_ms())

    def tick(self) -> None:
        if not self._engine.leading:
            return  # the leader notifies
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
            busy = Counter(self._sending.values())
            chosen = []
            for delivery in due:
                receiver_name = delivery.route.receiver
                if delivery.group.group_key in self._sending or busy[receiver_name] >= MAX_IN_FLIGHT_PER_RECEIVER:
                    continue
                busy[receiver_name] += 1
                self._sending[delivery.group.group_key] = receiver_name
                chosen.append(delivery)
            due = chosen
        for delivery in due:
            receiver = rules.receivers.get(delivery.route.receiver)
            if receiver is not None:
                self._pool.submit(self._deliver, delivery, receiver)

    def _deliver(self, delivery: Delivery, receiver: Receiver) -> None:
        body = notify.webhook_body(
            delivery,
            self._external_url,
            lambda alert: generator_url(self._external_url, self._engine.expression_of(alert.rule)),
        )
        began = time.perf_counter()
        error: BaseException | None = None
        try:
            self._post(receiver, body)
        except PostFailed as exc:
            error = exc
            if exc.retryable:
                outcome = self._retry(delivery, receiver, exc)
            else:
                outcome = notify.delivered(delivery, self._now_ms())
                event(
                    _log,
                    "the receiver refused the notification; not retried (fix the receiver or its URL)",
                    logging.ERROR,
                    receiver=receiver.name,
                    group=delivery.group.group_key,
                    error=str(exc),
                )
        except (OSError, ValueError) as exc:
            error = exc
            outcome = self._retry(delivery, receiver, exc)
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
        if self._telemetry is not None:
            self._telemetry.observe("webhook", receiver.name, began, error)
        with self._lock:
            self._sending.pop(outcome.group_key, None)
            if outcome.group_key in self._groups:
                self._groups[outcome.group_key] = outcome
                self._store.save_group(outcome)

    def _retry(self, delivery: Delivery, receiver: Receiver, exc: BaseException) -> GroupState:
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
        return outcome

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
