"""The packed chunk form (services/metrics/storage/codec.py): bit-exact for any float64 values and
any ascending timestamps, decoded alike one by one and in batches, under 3 bytes per sample for
exporter-like values, and a damaged blob is a CorruptChunk (DATA_LOSS), never another error."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import DataLoss
from services.metrics.storage import codec

any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)
bits = st.integers(min_value=0, max_value=2**64 - 1).map(lambda b: struct.unpack("<d", struct.pack("<Q", b))[0])
decimals = st.integers(min_value=-(10**12), max_value=10**12).flatmap(
    lambda n: st.integers(min_value=0, max_value=6).map(lambda d: n / 10**d)
)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(
        np.asarray(a, dtype=np.float64).view(np.uint64), np.asarray(b, dtype=np.float64).view(np.uint64)
    )


@given(st.lists(st.one_of(any_float, bits, decimals), min_size=1, max_size=400), st.data())
def test_any_values_and_timestamps_come_back_bit_for_bit(values, data):
    spacing = data.draw(
        st.lists(st.integers(min_value=1, max_value=2**31 // 500), min_size=len(values) - 1, max_size=len(values) - 1)
    )
    offsets = np.concatenate(([0], np.cumsum(spacing, dtype=np.int64))) if data.draw(st.booleans()) else None
    blob = codec.encode(np.array(values), offsets)
    decoded, decoded_offsets = codec.decode(blob, len(values))
    assert same_bits(decoded, np.array(values))
    if offsets is None or len(values) == 1:
        assert decoded_offsets is None
    else:
        assert np.array_equal(decoded_offsets, offsets)


@given(st.lists(st.lists(st.one_of(decimals, bits), min_size=1, max_size=50), min_size=1, max_size=30))
def test_decoding_many_at_once_equals_decoding_each(chunks):
    blobs = [codec.encode(np.array(values), None) for values in chunks]
    together, _ = codec.decode_many(blobs, [len(values) for values in chunks])
    assert same_bits(together, np.concatenate([np.array(values) for values in chunks]))


def exporter_like(kind: str, rng: random.Random, count: int = 360) -> np.ndarray:
    level = {"percent": 50.0, "load": 1.0, "pages": 2.0**30, "counter": 2.0**32, "integer": 0.0}[kind]
    values = []
    for _ in range(count):
        if kind == "percent":
            level = round(min(100.0, max(0.0, level + rng.gauss(0, 3))), 1)
        elif kind == "load":
            level = round(max(0.0, level + rng.gauss(0, 0.2)), 2)
        elif kind == "pages":
            level += round(rng.gauss(0, 200)) * 4096
        elif kind == "counter":
            level += rng.randint(0, 200_000)
        else:
            level = float(rng.randint(0, 8))
        values.append(level)
    return np.array(values)


def test_exporter_like_values_pack_under_three_bytes_per_sample():
    rng = random.Random(3)
    kinds = ("percent", "load", "pages", "counter", "integer")
    sizes = {kind: len(codec.encode(exporter_like(kind, rng), None)) / 360 for kind in kinds}
    assert sum(sizes.values()) / len(sizes) <= 3.0, sizes
    assert sizes["percent"] < 2.0 and sizes["integer"] < 1.0, sizes  # the decimal path, not the XOR one


def test_full_precision_floats_still_round_trip_through_the_xor_form():
    values = np.cumsum(np.random.default_rng(1).normal(size=360))
    assert same_bits(codec.decode(codec.encode(values, None), 360)[0], values)


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: blob[:10],  # shorter than the header
        lambda blob: blob[:-3],  # a cut-off frame
        lambda blob: blob + blob,  # a torn write
        lambda blob: bytes([9]) + blob[1:],  # an unknown kind
        lambda blob: blob[:2] + bytes([3]) + blob[3:],  # an impossible width
    ],
)
def test_a_damaged_blob_is_a_corrupt_chunk(damage):
    blob = codec.encode(exporter_like("percent", random.Random(1)), None)
    with pytest.raises(codec.CorruptChunk) as raised:
        codec.decode(damage(blob), 360)
    assert isinstance(raised.value, DataLoss)


def test_plain_chunks_are_read_together_and_a_short_one_is_named():
    from services.metrics.storage.chunks import PlainForm, decode_rows

    form = PlainForm(header=0, values=np.dtype("<f8"), offsets=np.dtype("<i4"))
    rows = [
        (7, 1_000, 3, 10, codec.PLAIN, None, np.array([1.0, 2.0, 3.0]).tobytes()),
        (7, 2_000, 2, 0, codec.PLAIN, np.array([0, 25], "<i4").tobytes(), np.array([4.0, 5.0]).tobytes()),
        (9, 1_000, 1, 0, codec.PLAIN, None, np.array([6.0]).tobytes()),
    ]
    index, series, times, values = decode_rows(rows, form)
    assert index.tolist() == [0, 0, 0, 1, 1, 2] and series.tolist() == [7, 7, 7, 7, 7, 9]
    assert times.tolist() == [1_000, 1_010, 1_020, 2_000, 2_025, 1_000]
    assert values.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    short = [*rows[:2], (9, 1_000, 2, 10, codec.PLAIN, None, np.array([6.0]).tobytes())]
    with pytest.raises(
        codec.CorruptChunk, match="series 9 at 1000 ms cannot be read: it holds 1 values where its row says 2"
    ):
        decode_rows(short, form)


@given(
    st.integers(min_value=3, max_value=400),
    st.integers(min_value=1, max_value=120_000),
    st.integers(min_value=0, max_value=50),
    st.randoms(use_true_random=False),
)
def test_timestamps_jittered_around_an_interval_come_back_exactly(count, interval, jitter, rng):
    offsets = np.array([i * interval + rng.randint(0, jitter) for i in range(count)], dtype=np.int64)
    offsets = np.maximum.accumulate(offsets - offsets[0])
    offsets[1:] = np.maximum(offsets[1:], offsets[:-1] + 1)  # strictly ascending, as stored
    _, decoded = codec.decode(codec.encode(np.zeros(count), offsets), count)
    assert np.array_equal(decoded, offsets)


def test_a_scrapers_jitter_is_stored_as_distances_from_the_grid_in_well_under_a_byte_a_sample():
    rng = random.Random(27)
    count = 240  # an hour at 15 s, each scrape 0-4 ms late
    offsets = np.array([i * 15_000 + rng.randrange(5) for i in range(count)], dtype=np.int64)
    offsets -= offsets[0]
    values = np.zeros(count)
    timed, even = codec.encode(values, offsets), codec.encode(values, None)
    assert (len(timed) - len(even)) / count < 0.5  # the spacing-change form took ~0.8 bytes a sample
    assert np.array_equal(codec.decode(timed, count)[1], offsets)


def test_six_hours_of_jitter_get_a_frame_of_their_own_and_cost_about_their_entropy():
    rng = random.Random(27)
    count = 1440  # six hours at 15 s, each scrape 0-4 ms late: log2(5) bits = 0.29 bytes a sample
    offsets = np.array([i * 15_000 + rng.randrange(5) for i in range(count)], dtype=np.int64)
    offsets -= offsets[0]
    values = exporter_like("percent", rng, count)
    timed, even = codec.encode(values, offsets), codec.encode(values, None)
    assert timed[3] & 0x40  # the offsets' own frame
    assert (len(timed) - len(even)) / count < 0.34  # sharing the values' frame: 0.41
    decoded_values, decoded_offsets = codec.decode(timed, count)
    assert np.array_equal(decoded_offsets, offsets) and np.array_equal(decoded_values, values)


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: blob[:24],  # cut inside the offsets' header
        lambda blob: blob[:-2],  # the offsets' frame cut off
        lambda blob: blob[:28] + bytes([0xFF, 0xFF]) + blob[30:],  # a values frame longer than the blob
    ],
)
def test_a_damaged_blob_with_offsets_of_their_own_is_a_corrupt_chunk(damage):
    rng = random.Random(3)
    offsets = np.array([i * 15_000 + rng.randrange(5) for i in range(500)], dtype=np.int64)
    blob = codec.encode(exporter_like("percent", rng, 500), offsets - offsets[0])
    assert blob[3] & 0x40
    with pytest.raises(codec.CorruptChunk):
        codec.decode(damage(blob), 500)
