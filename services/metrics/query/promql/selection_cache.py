"""Samples shared by the instant queries of one evaluation instant.

An alerting-rule cycle asks hundreds of expressions at the same instant, most over the same
few selectors with different windows (`avg_over_time(load[5m])`, `[10m]`, `rate(x[1h])`...).
Read one by one, each query pays for selecting the series and reading their samples again. Here
the first query at an instant reads its selector's samples over a generous span (at least
WIDEN_MS) and the next queries at that same instant, over the same matchers and a window inside
it, take theirs from memory.

Only queries at the same instant (to the millisecond) share, and only for a few seconds, so what
they see is what a query at that instant would have read moments earlier (a sample stamped at
or before the instant that arrives in between is seen from the next instant on, as with any
evaluation that has already run). What the rules themselves write at that instant (recording
rules, ALERTS, liveness) is read by their next rules: each of their writes empties the cache.
Bounded in entries and in samples held.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from services.metrics.domain import LabelSet
from services.metrics.query.promql.values import search_series

WIDEN_MS = 3_600_000
"""The span the first read at an instant covers, so that the windows of later rules fit in it."""
TTL_S = 5.0
MAX_ENTRIES = 64
MAX_SAMPLES = 20_000_000

Samples = tuple[list[LabelSet], np.ndarray, np.ndarray, np.ndarray]
"""Labels, times, values end to end, and where each series starts (as Evaluator._samples)."""


@dataclass(frozen=True)
class _Entry:
    lowest: int
    samples: Samples
    stored_at: float

    @property
    def size(self) -> int:
        return len(self.samples[1])


class SelectionCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[tuple[object, ...], _Entry] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self._clock = clock
        self.hits = 0
        self.misses = 0

    def samples(
        self, matchers: tuple[object, ...], lowest: int, highest: int, read: Callable[[int], Samples]
    ) -> Samples:
        """The selector's samples in [lowest, highest]; `read(lowest)` reads from the store."""
        key = (matchers, highest)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now - entry.stored_at > TTL_S:
                self._drop(key)
                entry = None
            if entry is not None and entry.lowest <= lowest:
                self._entries.move_to_end(key)
                self.hits += 1
                return narrowed(entry.samples, lowest)
            self.misses += 1
        wide = min(lowest, highest - WIDEN_MS + 1)
        found = read(wide)
        with self._lock:
            if key in self._entries:
                self._drop(key)
            if len(found[1]) <= MAX_SAMPLES // 4:
                self._entries[key] = _Entry(wide, found, now)
                self._held += len(found[1])
                while self._entries and (len(self._entries) > MAX_ENTRIES or self._held > MAX_SAMPLES):
                    self._drop(next(iter(self._entries)))
        return narrowed(found, lowest)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._held = 0

    def _drop(self, key: tuple[object, ...]) -> None:
        self._held -= self._entries.pop(key).size


def narrowed(samples: Samples, lowest: int) -> Samples:
    """Only the samples at or after `lowest`; series left without any are dropped."""
    labels, times, values, offsets = samples
    if not labels or (len(times) and int(times.min()) >= lowest):
        return samples
    starts = search_series(times, offsets, np.array([lowest - 1], dtype=np.int64))[:, 0]
    counts = offsets[1:] - starts
    kept = np.flatnonzero(counts > 0)
    counts = counts[kept]
    starts = starts[kept]
    total = int(counts.sum())
    index = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts) + np.arange(total)
    new_offsets = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(counts, out=new_offsets[1:])
    return [labels[i] for i in kept.tolist()], times[index], values[index], new_offsets
