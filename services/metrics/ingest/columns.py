"""A MetricBatch read as columns: every series' samples in two numpy arrays.

The batch is parsed with `MetricBatchSeriesBytes` (ingest_wire.proto), which
leaves every series as its encoded bytes; one scan then steps through the
fields of all series at once (a packed field is one length-delimited run, so
a series' values and timestamps are byte ranges of the batch). Nothing is
built per sample, and no Python object per series except for label sets:
values are read with one `view` over the gathered ranges, varint timestamps
are decoded for the whole batch at once, and evenly spaced series
(start_ms + interval_ms) are expanded arithmetically.

Anything the columnar reading cannot take as is (a client that sent repeated
fields unpacked, which protobuf permits) is parsed again with the standard
message and converted, so every valid encoding is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError

from infrawatch.metrics.v1 import ingest_wire_pb2 as wire
from infrawatch.metrics.v1 import metrics_pb2 as pb
from services.common.errors import InvalidArgument
from services.metrics.domain import InvalidMetadata, MetricInfo, MetricType

_NO_LABELS: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class BatchColumns:
    """One batch: per series its labels (empty: use `refs`), its ref and how many timestamps and
    values it sent; all timestamps and values concatenated in series order."""

    sequence: int
    metadata: list[MetricInfo | InvalidMetadata]
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
    """Parse one serialized MetricBatch into columns; raises InvalidArgument when it is not one.

    The batch is split into its series' bytes by protobuf, then every series' fields are found
    by a scan that steps through all series at once (`_scan`); anything the scan does not take
    as is goes through the standard message instead."""
    try:
        message = wire.MetricBatchSeriesBytes.FromString(data)
    except DecodeError:
        return _read_standard(data)
    pieces: list[bytes] = list(message.series)
    count = len(pieces)
    if not count:
        return _empty(message.sequence, _metadata(message.metadata))
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=count)
    ends = np.cumsum(lengths)
    joined = b"".join(pieces)
    buffer = np.frombuffer(joined + bytes(_PADDING), dtype=np.uint8)
    fields = _scan(buffer, ends - lengths, ends)
    if fields is None or np.any(fields.value_bytes % 8):
        return _read_standard(data)
    value_counts = fields.value_bytes // 8
    values = buffer[index_ranges(fields.value_at, fields.value_bytes)].view("<f8").astype(np.float64)

    time_bytes = buffer[index_ranges(fields.time_at, fields.time_bytes)]
    timestamps, varint_ends = decode_varints(time_bytes.tobytes())
    timestamp_counts = np.zeros(count, dtype=np.int64)
    if len(varint_ends):
        # Values per series: how many varints end inside each series' byte range; each range
        # must end on a varint's last byte (high bit clear).
        byte_bounds = np.cumsum(fields.time_bytes)
        if np.any(time_bytes[byte_bounds[fields.time_bytes > 0] - 1] & 0x80):
            raise InvalidArgument("timestamps_ms is not a valid packed varint field")
        timestamp_counts = np.diff(np.searchsorted(varint_ends, byte_bounds, side="left"), prepend=0)
    timestamps, timestamp_counts = _spaced(
        fields.start_ms, fields.interval_ms, timestamps, timestamp_counts, value_counts
    )
    labels = [_NO_LABELS] * count
    for index in np.flatnonzero(fields.has_labels).tolist():
        # SeriesLabels shares field 1 (labels) with SeriesSamples; the other fields are skipped.
        labels[index] = _label_tuple(pb.SeriesLabels.FromString(pieces[index]).labels)
    return BatchColumns(
        sequence=message.sequence,
        metadata=_metadata(message.metadata),
        labels=labels,
        refs=fields.ref.tolist(),
        timestamp_counts=timestamp_counts,
        value_counts=value_counts,
        timestamps=timestamps,
        values=values,
    )


_PADDING = 11
"""Zero bytes after the scanned buffer, so reading a 10-byte varint window never runs off its end."""
_WINDOW = np.arange(10)
_SHIFTS = (7 * np.arange(10)).astype(np.uint64)
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


@dataclass(slots=True)
class _SeriesFields:
    ref: np.ndarray
    time_at: np.ndarray
    time_bytes: np.ndarray
    value_at: np.ndarray
    value_bytes: np.ndarray
    start_ms: np.ndarray
    interval_ms: np.ndarray
    has_labels: np.ndarray


def varints_at(buffer: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The varint starting at each position (as int64) and its length in bytes (0: malformed)."""
    first = buffer[positions]
    if not np.any(first & 0x80):  # tags, refs, short lengths: one byte each
        return first.astype(np.int64), np.ones(len(positions), dtype=np.int64)
    window = buffer[positions[:, None] + _WINDOW]
    going_on = window >= 0x80
    lengths = np.argmin(going_on, axis=1) + 1
    lengths[going_on.all(axis=1)] = 0
    width = int(lengths.max())
    groups = (window[:, :width] & 0x7F).astype(np.uint64) << _SHIFTS[:width]
    groups *= _WINDOW[:width] < lengths[:, None]
    return groups.sum(axis=1, dtype=np.uint64).view(np.int64), lengths


def _scan(buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> _SeriesFields | None:
    """Every SeriesSamples field of every series, found by stepping through all series at once:
    each step reads one field (tag, then a varint or a length-prefixed run) of every series that
    has fields left. None when a series repeats a packed field, uses another wire type for a
    known field (unpacked repeated fields) or is malformed: the standard parser then decides."""
    count = len(starts)
    zeros = np.zeros(count, dtype=np.int64)
    found = _SeriesFields(
        ref=zeros.copy(),
        time_at=zeros.copy(),
        time_bytes=zeros.copy(),
        value_at=zeros.copy(),
        value_bytes=zeros.copy(),
        start_ms=zeros.copy(),
        interval_ms=zeros.copy(),
        has_labels=np.zeros(count, dtype=bool),
    )
    seen_times = np.zeros(count, dtype=bool)
    seen_values = np.zeros(count, dtype=bool)
    position = starts.copy()
    active = np.flatnonzero(position < ends)
    targets: _Targets = {2: found.ref, 5: found.start_ms, 6: found.interval_ms}
    runs: _Runs = {
        3: (found.time_at, found.time_bytes, seen_times),
        4: (found.value_at, found.value_bytes, seen_values),
    }
    while len(active):
        tags, tag_lengths = varints_at(buffer, position[active])
        at = position[active] + tag_lengths
        payload, payload_lengths = varints_at(buffer, at)
        step = _Step(active, at, payload, payload_lengths, at + payload_lengths)
        if np.any(tag_lengths == 0):
            return None
        if tags[0] == tags.min() == tags.max():
            # The usual step: every series has the same field next (one agent, one layout).
            following = _step_uniform(int(tags[0]), step, targets, runs, found)
        else:
            following = _step_mixed(tags, step, targets, runs, found)
        if following is None:
            return None
        if np.any(following > ends[active]):
            return None
        position[active] = following
        active = active[following < ends[active]]
    return found


@dataclass(slots=True)
class _Step:
    """One field of every series that has fields left: where its tag ends (`at`), the varint that
    follows the tag (the value, or a run's length), and where the field's data starts."""

    active: np.ndarray
    at: np.ndarray
    payload: np.ndarray
    payload_lengths: np.ndarray
    data_at: np.ndarray


_Targets = dict[int, np.ndarray]
_Runs = dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]


def _step_uniform(tag: int, step: _Step, targets: _Targets, runs: _Runs, found: _SeriesFields) -> np.ndarray | None:
    """One field, the same for every active series; the positions after it, None if unusable."""
    active, payload, payload_lengths, data_at = step.active, step.payload, step.payload_lengths, step.data_at
    field, kind = tag >> 3, tag & 7
    if kind == _VARINT:
        if field in runs or field == 1 or np.any(payload_lengths == 0):
            return None
        if field in targets:
            targets[field][active] = payload
        return data_at
    if kind == _LENGTH:
        if field in targets or np.any(payload_lengths == 0) or np.any(payload < 0):
            return None
        if field in runs:
            offsets, sizes, seen = runs[field]
            if np.any(seen[active]):
                return None  # a packed field sent in several parts
            seen[active] = True
            offsets[active] = data_at
            sizes[active] = payload
        elif field == 1:
            found.has_labels[active] = True
        return data_at + payload
    if kind in (_FIXED64, _FIXED32) and field not in targets and field not in runs and field != 1:
        return data_at - payload_lengths + (8 if kind == _FIXED64 else 4)
    return None


def _step_mixed(
    tags: np.ndarray, step: _Step, targets: _Targets, runs: _Runs, found: _SeriesFields
) -> np.ndarray | None:
    """One field per active series, not the same one everywhere."""
    active, at, payload, payload_lengths, data_at = (
        step.active,
        step.at,
        step.payload,
        step.payload_lengths,
        step.data_at,
    )
    field, kind = tags >> 3, tags & 7
    varint, length = kind == _VARINT, kind == _LENGTH
    if np.any((varint | length) & (payload_lengths == 0)) or np.any(length & (payload < 0)):
        return None
    known_varint = (field == 2) | (field == 5) | (field == 6)
    known_length = (field == 1) | (field == 3) | (field == 4)
    if np.any(known_varint & ~varint) or np.any(known_length & ~length):
        return None
    if np.any(~varint & ~length & (kind != _FIXED64) & (kind != _FIXED32)):
        return None
    for number, target in targets.items():
        chosen = field == number
        target[active[chosen]] = payload[chosen]
    for number, (offsets, sizes, seen) in runs.items():
        chosen = field == number
        rows = active[chosen]
        if np.any(seen[rows]):
            return None  # a packed field sent in several parts
        seen[rows] = True
        offsets[rows] = data_at[chosen]
        sizes[rows] = payload[chosen]
    found.has_labels[active[field == 1]] = True
    return np.where(varint, data_at, np.where(length, data_at + payload, at + np.where(kind == _FIXED64, 8, 4)))


def _label_tuple(labels: Sequence[pb.Label]) -> tuple[tuple[str, str], ...]:
    return tuple((label.name, label.value) for label in labels)


def _empty(sequence: int, metadata: list[MetricInfo | InvalidMetadata]) -> BatchColumns:
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


def _metadata(items: Sequence[pb.MetricMetadata]) -> list[MetricInfo | InvalidMetadata]:
    known = {t.value for t in MetricType}
    return [
        MetricInfo(m.name, MetricType(m.type), m.unit, m.help)
        if m.type in known
        else InvalidMetadata(m.name, f"type {m.type} is not a MetricType (0-{max(known)})")
        for m in items
    ]


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
        labels=[_label_tuple(s.labels) if s.labels else _NO_LABELS for s in message.series],
        refs=[s.ref for s in message.series],
        timestamp_counts=timestamp_counts,
        value_counts=value_counts,
        timestamps=timestamps,
        values=np.array(values, dtype=np.float64),
    )
