"""Fan-out of alert changes to WatchAlerts streams: the engine's threads publish, each watcher's
asyncio queue receives (via its loop's call_soon_threadsafe), so a waiting watcher holds no thread."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from services.alerts.domain import Alert

MAX_QUEUED = 10_000
"""Changes a slow watcher may have waiting; beyond that it is told to resubscribe."""


@dataclass
class Subscription:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[list[Alert] | None] = field(default_factory=asyncio.Queue)


class AlertHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []

    def subscribe(self, loop: asyncio.AbstractEventLoop) -> Subscription:
        subscription = Subscription(loop)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def publish(self, alerts: list[Alert]) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            overflowing = subscription.queue.qsize() >= MAX_QUEUED
            item = None if overflowing else list(alerts)
            try:
                subscription.loop.call_soon_threadsafe(subscription.queue.put_nowait, item)
            except RuntimeError:
                self.unsubscribe(subscription)  # its loop is closed
