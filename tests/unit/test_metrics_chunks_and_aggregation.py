import math

import numpy as np
import pytest

from services.metrics.domain import Aggregation
from services.metrics.query.aggregate import aggregate, points_in_range, rate
from services.metrics.storage.chunks import MAX_CHUNK_SPAN_MS, make_chunks, spacing, summarise


def test_evenly_spaced_samples_store_only_an_interval():
    (chunk,) = make_chunks(1, [1000, 2000, 3000], [1.0, 2.0, 3.0])
    assert (chunk.interval_ms, chunk.offsets) == (1000, None)
    assert chunk.timestamps() == [1000, 2000, 3000]


def test_unevenly_spaced_samples_store_offsets():
    (chunk,) = make_chunks(1, [1000, 1500, 3000], [1.0, 2.0, 3.0])
    assert chunk.interval_ms == 0 and chunk.offsets == [0, 500, 2000]
    assert chunk.timestamps() == [1000, 1500, 3000]


def test_a_single_sample_chunk_round_trips():
    (chunk,) = make_chunks(1, [42], [7.0])
    assert chunk.timestamps() == [42] and chunk.last == 7.0


def test_spacing_tells_regular_irregular_and_unordered_apart():
    assert spacing([10, 20, 30]) == 10
    assert spacing([10, 25, 30]) == 0
    assert spacing([10]) == 0
    assert spacing([10, 10, 20]) is None
    assert spacing([30, 20, 10]) is None


def test_chunks_are_split_so_none_spans_more_than_the_limit():
    times = [i * 600_000 for i in range(30)]
    chunks = make_chunks(1, times, [float(i) for i in range(30)])
    assert len(chunks) > 1
    assert all(c.end_ms - c.start_ms <= MAX_CHUNK_SPAN_MS for c in chunks)
    assert [t for c in chunks for t in c.timestamps()] == times


def test_summaries_order_nan_like_postgresql():
    assert summarise([1.0, 3.0, 2.0]) == (6.0, 1.0, 3.0)
    total, low, high = summarise([1.0, math.nan, 3.0])
    assert math.isnan(total) and low == 1.0 and math.isnan(high)
    total, low, high = summarise([math.nan])
    assert math.isnan(low) and math.isnan(high)


def test_points_in_range_clips_partially_covered_chunks():
    chunks = make_chunks(1, [0, 10, 20, 30], [0.0, 1.0, 2.0, 3.0])
    assert points_in_range(chunks, 10, 20) == ([10, 20], [1.0, 2.0])


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        (Aggregation.AVG, [1.5, 5.0]),
        (Aggregation.SUM, [6.0, 10.0]),
        (Aggregation.MIN, [0.0, 4.0]),
        (Aggregation.MAX, [3.0, 6.0]),
        (Aggregation.COUNT, [4.0, 2.0]),
        (Aggregation.LAST, [3.0, 6.0]),
    ],
)
def test_buckets_combine_summaries_and_samples_alike(aggregation, expected):
    whole = make_chunks(1, [0, 10, 20], [0.0, 1.0, 2.0])[0]
    straddling = make_chunks(2, [30, 40, 60], [3.0, 4.0, 6.0])[0]
    result = aggregate([(0, whole), (0, straddling)], 0, 79, 40, aggregation)
    assert result == {0: ([0, 40], expected)}


def test_rate_counts_a_decrease_as_a_reset():
    chunks = make_chunks(1, [0, 10_000, 20_000, 30_000, 40_000], [0.0, 10.0, 20.0, 5.0, 15.0])
    result = rate([(0, chunks)], 0, 39_999, 20_000)
    assert result == {0: ([0, 20_000], [10.0 / 20, (10.0 + 5.0) / 20])}
    # The sample at the range start still counts its increase from the sample before it.
    after_start = rate([(0, chunks)], 10_000, 49_999, 40_000)
    assert after_start == {0: ([10_000], [(10.0 + 10.0 + 5.0 + 10.0) / 40])}


def test_rate_sums_the_series_of_a_group():
    one = make_chunks(1, [0, 10_000], [0.0, 10.0])
    two = make_chunks(2, [0, 10_000], [100.0, 130.0])
    assert rate([(0, one), (0, two)], 0, 19_999, 20_000) == {0: ([0], [2.0])}


def test_partials_from_disjoint_shards_merge_into_the_same_answer():
    from services.metrics.query.aggregate import combine_partials

    shard_rows = [(0, 0, 2.0, 10.0), (0, 0, 3.0, 20.0), (0, 1, 1.0, 5.0)]
    assert combine_partials(shard_rows, Aggregation.AVG, 0, 60) == {0: ([0, 60], [6.0, 5.0])}
    assert combine_partials(shard_rows, Aggregation.SUM, 0, 60) == {0: ([0, 60], [30.0, 5.0])}
    assert combine_partials(shard_rows, Aggregation.COUNT, 0, 60) == {0: ([0, 60], [5.0, 1.0])}
    assert combine_partials(shard_rows, Aggregation.LAST, 0, 60) == {0: ([0, 60], [20.0, 5.0])}
    with_nan = [(0, 0, 0.0, math.nan), (0, 0, 0.0, 4.0)]
    assert combine_partials(with_nan, Aggregation.MIN, 0, 60) == {0: ([0], [4.0])}
    assert math.isnan(combine_partials(with_nan, Aggregation.MAX, 0, 60)[0][1][0])


@pytest.mark.parametrize("window", ["15m", "1h", "2h"])
def test_a_compaction_window_that_divides_six_hours_is_accepted(window):
    from services.metrics.settings import MetricsSettings

    settings = MetricsSettings.from_env({"INFRAWATCH_SERVICE_TOKEN": "s", "INFRAWATCH_COMPACTION_WINDOW": window})
    assert settings.compaction_window > 0


@pytest.mark.parametrize("window", ["50m", "3h"])
def test_a_compaction_window_that_does_not_fit_the_six_hour_blocks_is_refused_with_a_reason(window):
    from agent.values import ConfigError
    from services.metrics.settings import MetricsSettings

    with pytest.raises(ConfigError, match="INFRAWATCH_COMPACTION_WINDOW must"):
        MetricsSettings.from_env({"INFRAWATCH_SERVICE_TOKEN": "s", "INFRAWATCH_COMPACTION_WINDOW": window})


def test_a_long_chunk_is_packed_in_even_pieces_no_longer_than_the_store_allows():
    from services.metrics.storage.chunks import packed_chunks

    rng = np.random.default_rng(27)
    times = np.arange(1440, dtype=np.int64) * 15_000
    values = rng.random(1440)  # full-precision floats: ~8 bytes a sample
    whole = packed_chunks(np.zeros(1440, dtype=np.int64), times, values, max_span_ms=6 * 3_600_000)
    pieces = packed_chunks(np.zeros(1440, dtype=np.int64), times, values, 6 * 3_600_000, max_blob_bytes=1900)
    assert len(whole) == 1 and len(pieces) > 1
    assert all(len(p.blob) <= 1900 for p in pieces)
    assert [p.start_ms for p in pieces] == sorted(p.start_ms for p in pieces)
    assert sum(p.count for p in pieces) == 1440 and max(p.count for p in pieces) - min(p.count for p in pieces) <= 1
