"""Reading MetricBatch bytes as columns: every encoding protobuf allows gives the same columns."""

from __future__ import annotations

import math

import numpy as np
import pytest
from google.protobuf.internal.encoder import _VarintBytes

from infrawatch.metrics.v1 import metrics_pb2 as pb
from services.common.errors import InvalidArgument
from services.metrics.ingest.columns import decode_varints, read_batch


def columns(batch: pb.MetricBatch):
    read = read_batch(batch.SerializeToString())
    return read.timestamps.tolist(), read.values.tolist(), read.timestamp_counts.tolist(), read.value_counts.tolist()


def test_varints_of_every_length_decode_like_protobuf():
    numbers = [0, 1, 127, 128, 300, 2**31, 1_700_000_000_123, 2**63 - 1, -1, -(2**40)]
    encoded = b"".join(_VarintBytes(n & (2**64 - 1)) for n in numbers)
    values, ends = decode_varints(encoded)
    assert values.tolist() == numbers
    assert len(ends) == len(numbers)


def test_explicit_timestamps_and_values_come_out_in_series_order():
    batch = pb.MetricBatch(
        series=[
            pb.SeriesSamples(ref=1, timestamps_ms=[1_000, 2_000], values=[1.5, math.inf]),
            pb.SeriesSamples(ref=2, timestamps_ms=[5], values=[-2.0]),
        ]
    )
    assert columns(batch) == ([1_000, 2_000, 5], [1.5, math.inf, -2.0], [2, 1], [2, 1])


def test_evenly_spaced_series_are_expanded_from_start_and_interval():
    batch = pb.MetricBatch(
        series=[
            pb.SeriesSamples(ref=1, start_ms=10_000, interval_ms=500, values=[1.0, 2.0, 3.0]),
            pb.SeriesSamples(ref=2, timestamps_ms=[7, 9], values=[4.0, 5.0]),
            pb.SeriesSamples(ref=3, start_ms=20_000, values=[6.0]),
        ]
    )
    assert columns(batch) == (
        [10_000, 10_500, 11_000, 7, 9, 20_000],
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        [3, 2, 1],
        [3, 2, 1],
    )


def test_several_values_without_an_interval_have_no_timestamps_and_are_left_for_rejection():
    batch = pb.MetricBatch(series=[pb.SeriesSamples(ref=1, start_ms=10_000, values=[1.0, 2.0])])
    _, _, timestamp_counts, value_counts = columns(batch)
    assert (timestamp_counts, value_counts) == ([0], [2])


def test_unpacked_repeated_fields_are_read_through_the_standard_parser():
    # Field 3 (timestamps) and 4 (values) written one element at a time, as proto2 senders may.
    series = b"\x10\x01" + b"\x18" + _VarintBytes(42) + b"\x18" + _VarintBytes(43)
    series += b"\x21" + np.array([1.25], "<f8").tobytes() + b"\x21" + np.array([2.5], "<f8").tobytes()
    data = b"\x08\x09" + b"\x1a" + _VarintBytes(len(series)) + series
    read = read_batch(data)
    assert (read.sequence, read.timestamps.tolist(), read.values.tolist()) == (9, [42, 43], [1.25, 2.5])


def test_bytes_that_are_not_a_batch_are_invalid_argument():
    with pytest.raises(InvalidArgument):
        read_batch(b"\xff\xff\xff")


def test_the_field_scan_and_the_standard_parser_agree_on_random_batches():
    import random

    from services.metrics.ingest.columns import _read_standard

    rng = random.Random(7)
    for _ in range(200):
        batch = pb.MetricBatch(sequence=rng.randrange(1, 2**40))
        for _ in range(rng.randrange(0, 30)):
            count = rng.randrange(0, 6)
            values = [rng.choice([rng.uniform(-1e12, 1e12), math.nan, math.inf, 0.0]) for _ in range(count)]
            series = batch.series.add(ref=rng.randrange(0, 3000), values=values)
            if rng.random() < 0.3:
                series.labels.add(name="__name__", value=f"m{rng.randrange(5)}")
                series.labels.add(name="host", value="h" * rng.randrange(0, 200))
            if rng.random() < 0.5:
                start = rng.randrange(1, 2**45)
                series.timestamps_ms.extend(sorted(start + rng.randrange(0, 10**7) for _ in range(count)))
            elif count:
                series.start_ms = rng.randrange(1, 2**45)
                series.interval_ms = rng.choice([0, 1, 1000, 10**6])
        data = batch.SerializeToString()
        scanned, standard = read_batch(data), _read_standard(data)
        assert scanned.sequence == standard.sequence
        assert scanned.labels == standard.labels and scanned.refs == standard.refs
        for name in ("timestamp_counts", "value_counts", "timestamps"):
            assert getattr(scanned, name).tolist() == getattr(standard, name).tolist()
        assert np.array_equal(scanned.values, standard.values, equal_nan=True)
