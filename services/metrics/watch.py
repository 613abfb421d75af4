"""Live fan-out of newly committed samples to WatchMetrics subscribers in this process."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.metrics.domain import Matcher, Series, label_set_matches

Update = tuple[Series, list[int], list[float]]


@dataclass
class Subscription:
    matchers: Sequence[Matcher]
    updates: queue.Queue[list[Update]] = field(default_factory=lambda: queue.Queue(maxsize=1000))
    dropped: int = 0
    _matches: dict[int, bool] = field(default_factory=dict)

    def wants(self, series: Series) -> bool:
        known = self._matches.get(series.series_id)
        if known is None:
            known = self._matches[series.series_id] = label_set_matches(series.labels, self.matchers)
        return known


class WatchHub:
    """Subscribers receive the samples of matching series right after their batch commits.

    A subscriber that falls 1000 batches behind loses the oldest updates (counted in
    `dropped`) instead of slowing ingest down.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []

    def subscribe(self, matchers: Sequence[Matcher]) -> Subscription:
        subscription = Subscription(matchers)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.remove(subscription)

    def has_subscribers(self) -> bool:
        return bool(self._subscriptions)

    def publish(self, updates: Sequence[Update]) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            wanted = [u for u in updates if subscription.wants(u[0])]
            if not wanted:
                continue
            while True:
                try:
                    subscription.updates.put_nowait(wanted)
                    break
                except queue.Full:
                    try:
                        subscription.updates.get_nowait()
                        subscription.dropped += 1
                    except queue.Empty:
                        pass
