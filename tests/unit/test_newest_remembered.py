"""Latest values of what this process committed come from memory for a short while, and from the
store for everything else."""

from __future__ import annotations

import numpy as np

from services.metrics.storage.chunks import ChunkColumns
from services.metrics.storage.newest import NewestRemembered
from tests.unit.fakes import FakeSampleStore


def chunks(rows: list[tuple[int, list[int], list[float]]]) -> ChunkColumns:
    timestamps = np.array([t for _, ts, _ in rows for t in ts], dtype=np.int64)
    values = np.array([v for _, _, vs in rows for v in vs], dtype=np.float64)
    counts = np.array([len(ts) for _, ts, _ in rows], dtype=np.int64)
    ids = np.array([series for series, _, _ in rows], dtype=np.int64)
    zeros = np.zeros(len(rows))
    return ChunkColumns(ids, np.zeros(len(rows), dtype=np.int64), counts, timestamps, values, zeros, zeros, zeros)


class CountingStore(FakeSampleStore):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[list[int]] = []

    def latest(self, series_ids):
        self.asked.append(list(series_ids))
        return super().latest(series_ids)


def test_committed_newest_samples_are_answered_from_memory_until_they_are_no_longer_fresh():
    now = [100.0]
    store = CountingStore()
    newest = NewestRemembered(store, fresh_for_s=30, clock=lambda: now[0])
    newest.append(chunks([(1, [1000, 2000], [1.0, 2.0]), (2, [1500], [7.0])]))
    newest.append(chunks([(1, [1800], [9.0])]))  # an older sample arriving late does not win
    assert newest.latest([1, 2]) == {1: (2000, 2.0), 2: (1500, 7.0)}
    assert store.asked == []  # all from memory
    now[0] += 31
    assert newest.latest([1, 2, 3]) == store.latest([1, 2, 3])  # stale entries: the store answers
    assert store.asked[0] == [1, 2, 3]
