"""The selection cache gives a later query at the same instant exactly what a read would."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.metrics.query.promql.selection_cache import SelectionCache, narrowed


def _flat(per_series: list[list[int]]):
    labels = [(("__name__", "m"), ("i", str(i))) for i in range(len(per_series))]
    times = np.array([t for ts in per_series for t in ts], dtype=np.int64)
    offsets = np.zeros(len(per_series) + 1, dtype=np.int64)
    np.cumsum([len(ts) for ts in per_series], out=offsets[1:])
    return labels, times, times.astype(np.float64) * 2, offsets


@settings(max_examples=200)
@given(
    # As reads give them: every series has at least one sample.
    st.lists(
        st.lists(st.integers(0, 1000), min_size=1, max_size=20).map(lambda ts: sorted(set(ts))), min_size=1, max_size=8
    ),
    st.integers(-10, 1010),
)
def test_narrowing_keeps_exactly_the_samples_at_or_after_the_bound(per_series, lowest):
    labels, times, values, offsets = narrowed(_flat(per_series), lowest)
    expected = [[t for t in ts if t >= lowest] for ts in per_series]
    kept = [(i, ts) for i, ts in enumerate(expected) if ts]
    assert labels == [(("__name__", "m"), ("i", str(i))) for i, _ in kept]
    assert [times[offsets[j] : offsets[j + 1]].tolist() for j in range(len(labels))] == [ts for _, ts in kept]
    assert np.array_equal(values, times * 2.0)


def test_one_read_serves_the_narrower_windows_at_the_same_instant_and_a_clear_forgets():
    reads: list[int] = []
    data = _flat([[100, 200, 300], [250, 300]])

    def read(lowest: int):
        reads.append(lowest)
        return narrowed(data, lowest)

    cache = SelectionCache()
    wide = cache.samples(("m",), 150, 300, read)
    narrow = cache.samples(("m",), 260, 300, read)
    assert reads == [300 - 3_600_000 + 1]  # read once, widened
    assert wide[1].tolist() == [200, 300, 250, 300] and narrow[1].tolist() == [300, 300]
    cache.samples(("m",), 150, 301, read)  # another instant: its own read
    cache.clear()
    cache.samples(("m",), 150, 300, read)
    assert len(reads) == 3 and (cache.hits, cache.misses) == (1, 3)
