"""Background upkeep of the sample store: compaction and retention, off the ingest path.

Compaction merges the small chunks ingest writes (one per series per batch)
into one chunk per series per aligned window once the window has closed,
and rewrites them in the packed (compressed) form, which is what brings
storage down to about two bytes per sample. The first pass after start looks
at all stored data rather than the usual look-back, so chunks written before
packing existed (schema 0002) or while the service was down are packed too. Retention
drops data older than INFRAWATCH_RETENTION (whole day partitions on
PostgreSQL). Both run in their own transactions and never hold a lock that
ingest needs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.logs import event
from services.metrics.storage.ports import Maintenance

_log = logging.getLogger("infrawatch.metrics.maintenance")

COMPACTION_LOOKBACK_MS = 2 * 86_400_000
"""How far back each pass looks for windows to compact (late data from a buffered agent)."""


@dataclass(frozen=True)
class MaintenancePolicy:
    retention_ms: int
    compaction_window_ms: int = 3_600_000
    compaction_delay_ms: int = 600_000
    every_s: float = 60.0


def enforce_retention(store: Maintenance, retention_ms: int, now_ms: int) -> int:
    """Drop what is older than the retention period; returns the partitions or chunks removed."""
    return store.drop_older_than(now_ms - retention_ms)


def compact_closed_windows(store: Maintenance, policy: MaintenancePolicy, now_ms: int, everything: bool = False) -> int:
    """Compact every window that ended at least the compaction delay ago, within the look-back or
    (`everything`) since the oldest stored sample; returns chunks removed."""
    since = 0 if everything else now_ms - COMPACTION_LOOKBACK_MS
    return store.compact(policy.compaction_window_ms, since, now_ms - policy.compaction_delay_ms)


PassObserver = Callable[[int, int, float], None]
"""Told (retention units dropped, chunks removed, seconds) after every pass."""


def run_maintenance(
    store: Maintenance,
    policy: MaintenancePolicy,
    now_ms: int,
    everything: bool = False,
    observe: PassObserver = lambda dropped, removed, seconds: None,
) -> None:
    began = time.perf_counter()
    dropped = enforce_retention(store, policy.retention_ms, now_ms)
    merged = compact_closed_windows(store, policy, now_ms, everything)
    observe(dropped, merged, time.perf_counter() - began)
    if dropped or merged or everything:
        event(
            _log,
            "maintenance pass" + (" over all stored data" if everything else ""),
            retention_dropped=dropped,
            compaction_removed_chunks=merged,
            duration_ms=round((time.perf_counter() - began) * 1000, 1),
        )


class MaintenanceTask(threading.Thread):
    def __init__(
        self,
        store: Maintenance,
        policy: MaintenancePolicy,
        now_ms: Callable[[], int],
        stop: threading.Event,
        observe: PassObserver = lambda dropped, removed, seconds: None,
    ) -> None:
        super().__init__(name="maintenance", daemon=True)
        self._store = store
        self._policy = policy
        self._now_ms = now_ms
        self._halt = stop
        self._observe = observe

    def run(self) -> None:
        everything = True
        while not self._halt.wait(self._policy.every_s):
            try:
                run_maintenance(self._store, self._policy, self._now_ms(), everything, self._observe)
                everything = False
            except Exception:
                _log.exception("maintenance pass failed; will retry")
