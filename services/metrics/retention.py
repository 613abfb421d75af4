"""Background retention: drops samples older than INFRAWATCH_RETENTION without blocking ingest."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from services.common.logs import event
from services.metrics.ports import SampleStore

_log = logging.getLogger("infrawatch.metrics.retention")


def enforce_retention(store: SampleStore, retention_ms: int, now_ms: int) -> int:
    """Drop what is older than the retention period; returns the partitions or chunks removed."""
    return store.drop_older_than(now_ms - retention_ms)


class RetentionTask(threading.Thread):
    def __init__(
        self,
        store: SampleStore,
        retention_ms: int,
        every_s: float,
        now_ms: Callable[[], int],
        stop: threading.Event,
    ) -> None:
        super().__init__(name="retention", daemon=True)
        self._store = store
        self._retention_ms = retention_ms
        self._every_s = every_s
        self._now_ms = now_ms
        self._stop = stop

    def run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                dropped = enforce_retention(self._store, self._retention_ms, self._now_ms())
                if dropped:
                    event(_log, "retention dropped old samples", dropped=dropped)
            except Exception:
                _log.exception("retention pass failed; will retry")
