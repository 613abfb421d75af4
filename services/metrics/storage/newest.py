"""The newest sample of each series this process committed, remembered for a short while, so
"latest values" over a whole fleet (the fleet overview's busiest hosts, a page of hosts' key
figures) need not ask the database for thousands of series.

Only what this process wrote is known here; with several replicas another may have written a
newer sample meanwhile, so an entry is trusted for `fresh_for_s` only (longer than the agents'
10 s round, so a series that keeps arriving here never needs the database) and anything older, or
never seen, is read from the store. Everything else passes straight through.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from services.metrics.domain import Aggregation
from services.metrics.storage.chunks import ChunkColumns
from services.metrics.storage.columns import AggregationInput, Points, Samples
from services.metrics.storage.ports import SampleStore

FRESH_FOR_S = 30.0


class NewestRemembered:
    def __init__(
        self, store: SampleStore, fresh_for_s: float = FRESH_FOR_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._fresh_for_s = fresh_for_s
        self._clock = clock
        self._lock = threading.Lock()
        self._newest: dict[int, tuple[int, float, float]] = {}  # series id -> (time ms, value, noted at)
        self._sweep_above = 100_000  # entries; past it, expired ones are forgotten

    def append(self, chunks: ChunkColumns) -> None:
        self._store.append(chunks)
        if not len(chunks):
            return
        ends = chunks.bounds[1:] - 1
        noted = self._clock()
        rows = zip(
            chunks.series_id.tolist(), chunks.timestamps[ends].tolist(), chunks.values[ends].tolist(), strict=True
        )
        with self._lock:
            for series_id, end_ms, last in rows:
                known = self._newest.get(series_id)
                if known is None or end_ms >= known[0]:
                    self._newest[series_id] = (end_ms, last, noted)
            if len(self._newest) > self._sweep_above:
                # Series that stopped arriving (or moved to another replica) are not kept forever.
                self._newest = {k: v for k, v in self._newest.items() if noted - v[2] <= self._fresh_for_s}
                self._sweep_above = max(100_000, 2 * len(self._newest))

    def latest(self, series_ids: Sequence[int]) -> dict[int, tuple[int, float]]:
        now = self._clock()
        found: dict[int, tuple[int, float]] = {}
        unknown = []
        with self._lock:
            for series_id in series_ids:
                known = self._newest.get(series_id)
                if known is not None and now - known[2] <= self._fresh_for_s:
                    found[series_id] = (known[0], known[1])
                else:
                    unknown.append(series_id)
        if unknown:
            found.update(self._store.latest(unknown))
        return found

    # Everything else is the store's (ingest's duplicate filter included: it must see the database).
    def newest_timestamps(self, series_ids: Sequence[int]) -> dict[int, int]:
        return self._store.newest_timestamps(series_ids)

    def stored_timestamps(self, series_id: int, start_ms: int, end_ms: int) -> set[int]:
        return self._store.stored_timestamps(series_id, start_ms, end_ms)

    def raw(
        self, series_ids: Sequence[int], start_ms: int, end_ms: int, refuse_above: int | None = None
    ) -> dict[int, Points]:
        return self._store.raw(series_ids, start_ms, end_ms, refuse_above)

    def raw_samples(
        self, series_ids: Sequence[int], start_ms: int, end_ms: int, refuse_above: int | None = None
    ) -> Samples:
        return self._store.raw_samples(series_ids, start_ms, end_ms, refuse_above)

    def aggregation_input(
        self,
        groups: dict[int, int],
        read_from_ms: int,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        aggregation: Aggregation,
    ) -> AggregationInput:
        return self._store.aggregation_input(groups, read_from_ms, start_ms, end_ms, step_ms, aggregation)

    def series_with_samples(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> set[int]:
        return self._store.series_with_samples(series_ids, start_ms, end_ms)

    def drop_older_than(self, cutoff_ms: int) -> int:
        return self._store.drop_older_than(cutoff_ms)

    def compact(self, window_ms: int, since_ms: int, until_ms: int) -> int:
        return self._store.compact(window_ms, since_ms, until_ms)
