"""A MetricBatch read as columns: every series' samples in two numpy arrays.

The batch is parsed with `MetricBatchColumns` (ingest_wire.proto), which
declares the packed sample fields as `bytes`, so each series costs one bytes
object and nothing is built per sample: values are read with one `frombuffer`
over all series, varint timestamps are decoded for the whole batch at once,
and evenly spaced series (start_ms + interval_ms) are expanded arithmetically.

Anything the columnar reading cannot take as is (a client that sent repeated
fields unpacked, which protobuf permits) is parsed again with the standard
message and converted, so every valid encoding is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np
from google.protobuf.message import DecodeError

from infrawatch.metrics.v1 import ingest_wire_pb2 as wire
from infrawatch.metrics.v1 import metrics_pb2 as pb
from services.common.errors import InvalidArgument
from services.metrics.domain import MetricInfo, MetricType

_NO_LABELS: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class BatchColumns:
    """One batch: per series its labels (empty: use `refs`), its ref and how many timestamps and
    values it sent; all timestamps and values concatenated in series order."""

    sequence: int
    metadata: list[MetricInfo]
    labels: list[tuple[tuple[str, str], ...]]
    refs: list[int]
    timestamp_counts: np.ndarray  # int64 per series
    value_counts: np.ndarray  # int64 per series
    timestamps: np.ndarray  # int64, only series whose counts match contribute
    values: np.ndarray  # float64, every series' values in order

    def __len__(self) -> int:
        return len(self.refs)


def decode_varints(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Packed varints as int64 values, plus the byte index at which each value ends.

    Each varint is 7-bit groups, low group first, the high bit set on every byte but the last.
    The values are sums of shifted groups, computed for all of them at once."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if not len(raw):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if raw[-1] & 0x80:
        raise InvalidArgument("timestamps_ms is not a valid packed varint field (truncated)")
    ends = np.flatnonzero(raw < 0x80)
    if len(ends) == len(raw):  # every value below 128: rare for timestamps, but valid
        return raw.astype(np.int64), ends
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > 10:
        raise InvalidArgument("timestamps_ms holds a varint longer than 10 bytes")
    position = np.arange(len(raw)) - np.repeat(starts, lengths)
    groups = (raw & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    return np.add.reduceat(groups, starts).view(np.int64), ends


def _from_standard(message: pb.MetricBatch) -> tuple[list[int], list[int], list[float]]:
    counts, times, values = [], [], []
    for series in message.series:
        counts.append(len(series.timestamps_ms))
        times.extend(series.timestamps_ms)
        values.extend(series.values)
    return counts, times, values


def read_batch(data: bytes) -> BatchColumns:
    """Parse one serialized MetricBatch into columns; raises InvalidArgument when it is not one."""
    try:
        message = wire.MetricBatchColumns.FromString(data)
    except DecodeError:
        message = None

    # Every field the columnar view reads is known to it: after dropping unknown fields, a size
    # mismatch means the sender used an encoding it does not read (unpacked repeated fields, a
    # packed field split in parts), so the general path parses it.
    if message is not None:
        message.DiscardUnknownFields()
    if message is None or message.ByteSize() != len(data):
        return _read_standard(data)
    series: Sequence[wire.SeriesColumns] = message.series
    count = len(series)
    if not count:
        return _empty(message.sequence, _metadata(message.metadata))
    # One C-level pass over the series fetches every field (attrgetter + zip, no bytecode per series).
    label_lists, refs, value_bytes, time_bytes, starts, intervals = zip(*map(_FIELDS, series), strict=True)
    value_counts = np.fromiter(map(len, value_bytes), dtype=np.int64, count=count)
    if np.any(value_counts % 8):
        return _read_standard(data)
    value_counts //= 8
    values = np.frombuffer(b"".join(value_bytes), dtype="<f8").astype(np.float64, copy=False)

    byte_counts = np.fromiter(map(len, time_bytes), dtype=np.int64, count=count)
    joined = b"".join(time_bytes)
    timestamps, ends = decode_varints(joined)
    timestamp_counts = np.zeros(count, dtype=np.int64)
    if len(ends):
        # Values per series: how many varints end inside each series' byte range; each range
        # must end on a varint's last byte (high bit clear).
        byte_bounds = np.cumsum(byte_counts)
        last_bytes = np.frombuffer(joined, dtype=np.uint8)[byte_bounds[byte_counts > 0] - 1]
        if np.any(last_bytes & 0x80):
            raise InvalidArgument("timestamps_ms is not a valid packed varint field")
        timestamp_counts = np.diff(np.searchsorted(ends, byte_bounds, side="left"), prepend=0)
    timestamps, timestamp_counts = _spaced(
        np.array(starts, dtype=np.int64),
        np.array(intervals, dtype=np.int64),
        timestamps,
        timestamp_counts,
        value_counts,
    )
    return BatchColumns(
        sequence=message.sequence,
        metadata=_metadata(message.metadata),
        labels=_label_tuples(label_lists) if any(label_lists) else [_NO_LABELS] * count,
        refs=list(refs),
        timestamp_counts=timestamp_counts,
        value_counts=value_counts,
        timestamps=timestamps,
        values=values,
    )


_FIELDS = attrgetter("labels", "ref", "values", "timestamps_ms", "start_ms", "interval_ms")


def _label_tuples(label_lists: Sequence[Sequence[pb.Label]]) -> list[tuple[tuple[str, str], ...]]:
    return [tuple((label.name, label.value) for label in labels) if labels else _NO_LABELS for labels in label_lists]


def _empty(sequence: int, metadata: list[MetricInfo]) -> BatchColumns:
    nothing = np.zeros(0, dtype=np.int64)
    return BatchColumns(sequence, metadata, [], [], nothing, nothing, nothing, np.zeros(0, dtype=np.float64))


def _spaced(
    starts: np.ndarray,
    intervals: np.ndarray,
    timestamps: np.ndarray,
    timestamp_counts: np.ndarray,
    value_counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Expand series sent as start_ms + interval_ms into explicit timestamps, in series order."""
    spaced = (timestamp_counts == 0) & (starts != 0) & (value_counts > 0)
    if not spaced.any():
        return timestamps, timestamp_counts
    # A spaced series with several values needs a positive interval; leaving its count at 0 makes
    # ingest reject it as a length mismatch with an explanation.
    spaced &= (value_counts == 1) | (intervals > 0)
    if spaced.all() and (value_counts == value_counts[0]).all():
        # The usual batch: every series spaced, with the same number of samples.
        steps = np.arange(value_counts[0], dtype=np.int64)
        return (starts[:, None] + intervals[:, None] * steps).ravel(), value_counts
    counts = np.where(spaced, value_counts, timestamp_counts)
    total = int(counts.sum())
    out = np.empty(total, dtype=np.int64)
    out_bounds = np.concatenate(([0], np.cumsum(counts)))
    explicit = ~spaced & (counts > 0)
    if explicit.any():
        index = index_ranges(out_bounds[:-1][explicit], counts[explicit])
        out[index] = timestamps
    index = index_ranges(out_bounds[:-1][spaced], counts[spaced])
    step = np.arange(total, dtype=np.int64)[index] - np.repeat(out_bounds[:-1][spaced], counts[spaced])
    out[index] = np.repeat(starts[spaced], counts[spaced]) + step * np.repeat(intervals[spaced], counts[spaced])
    return out, counts


def index_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated index ranges [start, start + count), as one array."""
    total = int(counts.sum())
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + within


def _metadata(items: Sequence[pb.MetricMetadata]) -> list[MetricInfo]:
    return [MetricInfo(m.name, MetricType(m.type), m.unit, m.help) for m in items]


def _read_standard(data: bytes) -> BatchColumns:
    try:
        message = pb.MetricBatch.FromString(data)
    except DecodeError:
        raise InvalidArgument("the message is not a valid MetricBatch") from None
    counts, times, values = _from_standard(message)
    value_counts = np.array([len(s.values) for s in message.series], dtype=np.int64)
    timestamps = np.array(times, dtype=np.int64)
    timestamp_counts = np.array(counts, dtype=np.int64)
    timestamps, timestamp_counts = _spaced(
        np.array([s.start_ms for s in message.series], dtype=np.int64),
        np.array([s.interval_ms for s in message.series], dtype=np.int64),
        timestamps,
        timestamp_counts,
        value_counts,
    )
    return BatchColumns(
        sequence=message.sequence,
        metadata=_metadata(message.metadata),
        labels=_label_tuples([s.labels for s in message.series]),
        refs=[s.ref for s in message.series],
        timestamp_counts=timestamp_counts,
        value_counts=value_counts,
        timestamps=timestamps,
        values=np.array(values, dtype=np.float64),
    )
