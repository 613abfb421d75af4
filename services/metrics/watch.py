"""Live fan-out of newly committed samples to WatchMetrics subscribers in this process.

Ingest publishes from its worker threads; each subscription is consumed by a
coroutine on the server's event loop, which sleeps (holding no thread) until a
publish wakes it through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.common.selectors import Matcher, label_set_matches
from services.metrics.domain import Series

Update = tuple[Series, list[int], list[float]]
MAX_PENDING_BATCHES = 256
"""Committed batches a subscriber may fall behind before it loses the oldest (counted in `dropped`)."""


@dataclass(eq=False)
class Subscription:
    matchers: Sequence[Matcher]
    loop: asyncio.AbstractEventLoop | None = None
    pending: deque[list[Update]] = field(default_factory=lambda: deque(maxlen=MAX_PENDING_BATCHES))
    dropped: int = 0
    _matches: dict[int, bool] = field(default_factory=dict)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, series: Series) -> bool:
        known = self._matches.get(series.series_id)
        if known is None:
            known = self._matches[series.series_id] = label_set_matches(series.labels, self.matchers)
        return known

    def offer(self, updates: list[Update]) -> bool:
        """Queue updates (any thread); the oldest go when the subscriber is too far behind.
        Returns whether a queued batch was dropped to make room."""
        dropping = len(self.pending) == MAX_PENDING_BATCHES
        if dropping:
            self.dropped += 1
        self.pending.append(updates)
        if self.loop is not None and not self._ready.is_set():
            with contextlib.suppress(RuntimeError):  # the loop has closed: the subscriber is gone
                self.loop.call_soon_threadsafe(self._ready.set)
        return dropping

    def drain(self) -> list[Update]:
        """Everything queued so far, oldest first, without waiting."""
        drained: list[Update] = []
        while True:
            try:
                drained.extend(self.pending.popleft())
            except IndexError:
                return drained

    async def next(self, timeout_s: float) -> list[Update]:
        """The updates queued since the last call, waiting up to `timeout_s` for the first."""
        if not self.pending:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout_s)
            except TimeoutError:
                return []
        self._ready.clear()
        return self.drain()


class WatchHub:
    """Subscribers receive the samples of matching series right after their batch commits;
    a slow subscriber loses its oldest updates rather than slowing ingest down."""

    def __init__(self, on_dropped: Callable[[], None] = lambda: None) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []
        self._on_dropped = on_dropped

    def subscribe(self, matchers: Sequence[Matcher], loop: asyncio.AbstractEventLoop | None = None) -> Subscription:
        subscription = Subscription(matchers, loop)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.remove(subscription)

    def has_subscribers(self) -> bool:
        return bool(self._subscriptions)

    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def publish(self, updates: Sequence[Update]) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            wanted = [u for u in updates if subscription.wants(u[0])]
            if wanted and subscription.offer(wanted):
                self._on_dropped()
