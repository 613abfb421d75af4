"""Prometheus remote-write 1.0 in: a snappy-compressed WriteRequest → one ingest batch.

The request is decompressed with cramjam (snappy block format, as the protocol
specifies), split into its time series' bytes by protobuf, and then every time
series' fields are found by one scan that steps through all of them at once
with numpy (as `ingest/columns.py` does for MetricBatch): the labels are the
leading bytes of a series up to its first sample, and those bytes are the key
under which the sender's session remembers the label set, so a label set is
parsed only the first time a sender sends it. Samples are decoded as columns.
A request the scan cannot take as is (fields out of the usual order, a
malformed series) is parsed again with the standard message, so every valid
encoding is accepted.

Every limit is checked before the work it bounds (`DecodeLimits`): the time series are counted
while they are still one bytes field each, a series' labels are measured before they are parsed,
samples are counted as the scan finds them. Series whose samples all have one encoded size (what
Prometheus sends) are decoded without stepping through their fields.

Each sender (one credential) has one `RemoteWriteSession`: a long-lived
`IngestStream` whose refs stand for label sets, so remote-write goes through
exactly the checks, idempotency rules and group commit the agents' streams use.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import cast

import cramjam
import numpy as np
from google.protobuf.message import DecodeError

from infrawatch.metrics.v1 import remote_write_pb2 as wire
from services.common.errors import InvalidArgument
from services.metrics.domain import (
    MAX_LABEL_SET_BYTES,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    PROM_FAMILY_TYPES,
    FamilyInfo,
    InvalidMetadata,
    MetricInfo,
    MetricType,
    Reason,
    validate_metric_info,
)
from services.metrics.ingest.columns import BatchColumns, index_ranges, varints_at
from services.metrics.ingest.stream import Ingestor, IngestStream, PreparedBatch

_PADDING = 11
_EIGHT = np.arange(8)
_LENGTH_DELIMITED = 2
_LABELS, _SAMPLES, _EXEMPLARS, _HISTOGRAMS = 1, 2, 3, 4
_VALUE_TAG, _TIMESTAMP_TAG = 0x09, 0x10
_LABEL_TAG = 0x0A  # field 1, length-delimited
_SAMPLE_TAG = 0x12  # field 2, length-delimited


MAX_SCAN_STEPS = 128
"""The scan steps through all series at once, one field per step: past this many steps (a series
with more than ~128 samples, which Prometheus does not send) the request goes to the standard
parser instead, which is bounded by size."""


class PayloadTooLarge(InvalidArgument):
    """The request, once decompressed, would exceed the receiver's limit."""


@dataclass(frozen=True)
class DecodeLimits:
    """What one request may hold, checked while it is decoded (before the work each one bounds):
    the time series are counted before any is looked at, a series' labels are measured before
    they are parsed, and the samples are counted as the scan finds them."""

    max_series: int = 20_000
    max_samples: int = 500_000
    max_standard_parse_bytes: int = 4 << 20
    """The fallback parser (fields in an unusual order) builds a Python object per sample: only
    requests up to this size take it."""


@dataclass(frozen=True)
class OversizedLabels:
    """A time series whose encoded labels are longer than any storable label set: not parsed."""

    index: int
    samples: int
    label_bytes: int


@dataclass(slots=True)
class WriteColumns:
    """A decoded WriteRequest: per time series its label bytes and sample count; all samples in
    series order."""

    keys: list[bytes]
    sample_counts: np.ndarray  # int64 per series
    timestamps: np.ndarray  # int64
    values: np.ndarray  # float64
    metadata: list[MetricInfo | InvalidMetadata] = field(default_factory=list)
    exemplars: int = 0
    histograms: int = 0
    families: list[FamilyInfo] = field(default_factory=list)
    oversized: list[OversizedLabels] = field(default_factory=list)
    key_lengths: np.ndarray | None = None  # int64 per series, when the decoder knows them

    @property
    def samples(self) -> int:
        return len(self.values)


def decompress(body: bytes, limit: int) -> bytes:
    """The snappy block's contents; InvalidArgument when it is not one, PayloadTooLarge past `limit`.

    The block starts with its uncompressed length as a varint, checked before anything is
    allocated, so a small body cannot make the receiver allocate gigabytes."""
    length, shift = 0, 0
    for byte in body[:10]:
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    else:
        raise InvalidArgument("the body is not snappy-compressed (remote-write bodies are snappy block format)")
    if length > limit:
        raise PayloadTooLarge(f"the request decompresses to {length} bytes; the limit is {limit}")
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError as exc:
        raise InvalidArgument(f"the body is not valid snappy block data ({exc})") from None


def decode(data: bytes, limits: DecodeLimits | None = None) -> WriteColumns:
    """A serialized WriteRequest as columns; InvalidArgument when it is not one or holds more than
    `limits` allow (a request's memory is then bounded by a small multiple of its size)."""
    limits = limits or DecodeLimits()
    try:
        # Each time series stays one bytes field inside the parser's arena until it is counted.
        message = wire.PromWriteRequestSeriesBytes.FromString(data)
    except DecodeError:
        raise InvalidArgument("the body is not a remote-write WriteRequest (protobuf could not parse it)") from None
    metadata, families = _metadata(message.metadata)
    count = len(message.timeseries)
    if count > limits.max_series:
        raise PayloadTooLarge(
            f"the request holds {count} time series; the limit is {limits.max_series} per request "
            "(INFRAWATCH_MAX_SERIES_PER_BATCH; lower queue_config.max_samples_per_send in prometheus.yml)"
        )
    if not count:
        nothing = np.zeros(0, dtype=np.int64)
        return WriteColumns([], nothing, nothing, np.zeros(0, dtype=np.float64), metadata, families=families)
    pieces: list[bytes] = list(message.timeseries)
    del message
    scanned = _scan(pieces, limits.max_samples)
    if scanned is None:
        if len(data) > limits.max_standard_parse_bytes:
            raise PayloadTooLarge(
                f"the request is {len(data)} bytes and its time series are not laid out as Prometheus writes "
                f"them (labels first, at most {MAX_SCAN_STEPS} samples each); such requests are taken up to "
                f"{limits.max_standard_parse_bytes} bytes: send smaller ones"
            )
        scanned = _standard(data, limits.max_samples)
    scanned.metadata = metadata
    scanned.families = families
    return _without_oversized_labels(scanned)


def _too_many_samples(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request holds more than {limit} samples; the limit is {limit} per request "
        "(INFRAWATCH_MAX_SAMPLES_PER_WRITE)"
    )


def _without_oversized_labels(columns: WriteColumns) -> WriteColumns:
    """The columns without the series whose labels could never be stored (each is reported as
    rejected); their labels are never parsed."""
    lengths = columns.key_lengths
    if lengths is None:
        lengths = np.fromiter(map(len, columns.keys), dtype=np.int64, count=len(columns.keys))
    too_long = lengths > MAX_LABEL_SET_BYTES
    if not too_long.any():
        return columns
    counts = columns.sample_counts
    keep = np.repeat(~too_long, counts)
    rows = np.flatnonzero(~too_long).tolist()
    return WriteColumns(
        [columns.keys[i] for i in rows],
        counts[~too_long],
        columns.timestamps[keep],
        columns.values[keep],
        columns.metadata,
        columns.exemplars,
        columns.histograms,
        columns.families,
        [OversizedLabels(int(i), int(counts[i]), int(lengths[i])) for i in np.flatnonzero(too_long)],
    )


def _scan(pieces: list[bytes], max_samples: int) -> WriteColumns | None:
    """Every time series' fields, found by stepping through all series at once; None when a series
    is malformed or its labels do not come first (then the standard parser decides). Past
    `max_samples` sample fields it stops with PayloadTooLarge, before decoding any of them."""
    count = len(pieces)
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=count)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    joined = b"".join(pieces)
    buffer = np.frombuffer(joined + bytes(_PADDING), dtype=np.uint8)
    label_end = starts.copy()
    in_samples = np.zeros(count, dtype=bool)
    sample_rows: list[np.ndarray] = []
    sample_at: list[np.ndarray] = []
    sample_size: list[np.ndarray] = []
    exemplars = histograms = found_samples = steps = 0
    position = _skip_short_labels(buffer, starts.copy(), ends)
    if position is None:
        return None
    label_end[:] = position
    uniform, rows, at, size = _uniform_samples(buffer, position, ends, max_samples)
    if len(rows):
        found_samples = len(rows)
        sample_rows.append(rows)
        sample_at.append(at)
        sample_size.append(size)
    active = np.flatnonzero((position < ends) & ~uniform)
    while len(active):
        tags, tag_lengths = varints_at(buffer, position[active])
        at = position[active] + tag_lengths
        sizes, size_lengths = varints_at(buffer, at)
        if np.any(tag_lengths == 0) or np.any(size_lengths == 0) or np.any(tags & 7 != _LENGTH_DELIMITED):
            return None
        data_at = at + size_lengths
        following = data_at + sizes
        if np.any(sizes < 0) or np.any(following > ends[active]):
            return None
        fields = tags >> 3
        labels = fields == _LABELS
        if np.any(labels & in_samples[active]):
            return None  # a label after a sample: not the layout senders use
        label_end[active[labels]] = following[labels]
        samples = fields == _SAMPLES
        if samples.any():
            rows = active[samples]
            found_samples += len(rows)
            if found_samples > max_samples:
                raise _too_many_samples(max_samples)
            in_samples[rows] = True
            sample_rows.append(rows)
            sample_at.append(data_at[samples])
            sample_size.append(sizes[samples])
        exemplars += int(np.count_nonzero(fields == _EXEMPLARS))
        histograms += int(np.count_nonzero(fields == _HISTOGRAMS))
        position[active] = following
        active = active[following < ends[active]]
        steps += 1
        if steps > MAX_SCAN_STEPS and len(active):
            return None  # a series of many samples: the scan would step through them one by one
    keys = list(map(joined.__getitem__, map(slice, starts.tolist(), label_end.tolist())))
    if not sample_rows:
        nothing = np.zeros(0, dtype=np.int64)
        return WriteColumns(keys, np.zeros(count, dtype=np.int64), nothing, np.zeros(0), [], exemplars, histograms)
    rows = np.concatenate(sample_rows)
    order = np.argsort(rows, kind="stable")  # series order; a series' samples keep theirs
    decoded = _samples(buffer, np.concatenate(sample_at)[order], np.concatenate(sample_size)[order])
    if decoded is None:
        return None
    timestamps, values = decoded
    counts = np.bincount(rows, minlength=count).astype(np.int64)
    columns = WriteColumns(keys, counts, timestamps, values, [], exemplars, histograms)
    columns.key_lengths = label_end - starts
    return columns


def _uniform_samples(
    buffer: np.ndarray, position: np.ndarray, ends: np.ndarray, max_samples: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The series whose fields after their labels are all samples of one encoded size (what
    Prometheus sends: one sample, or several whose values are non-zero and whose timestamps have
    the same varint width), with every sample's row, position and size found without stepping:
    each sample's tag and size byte are checked at its stride at once. The rest go to the general
    step. Returns (mask of such series, rows, data positions, sizes)."""
    region = ends - position
    size = buffer[position + 1].astype(np.int64)
    element = size + 2
    candidate = (region >= 2) & (buffer[position] == _SAMPLE_TAG) & (size < 0x80) & (region % element == 0)
    chosen = np.flatnonzero(candidate)
    uniform = np.zeros(len(position), dtype=bool)
    nothing = np.zeros(0, dtype=np.int64)
    if not len(chosen):
        return uniform, nothing, nothing, nothing
    counts = region[chosen] // element[chosen]
    total = int(counts.sum())
    if total > max_samples:
        raise _too_many_samples(max_samples)
    sizes = np.repeat(size[chosen], counts)
    firsts = index_ranges(np.zeros(len(chosen), dtype=np.int64), counts) * (sizes + 2) + np.repeat(
        position[chosen], counts
    )
    fine = (buffer[firsts] == _SAMPLE_TAG) & (buffer[firsts + 1] == sizes)
    if not fine.all():
        whole = np.minimum.reduceat(fine.astype(np.int8), np.cumsum(counts) - counts).astype(bool)
        keep = np.repeat(whole, counts)
        chosen, counts, firsts, sizes = chosen[whole], counts[whole], firsts[keep], sizes[keep]
    uniform[chosen] = True
    return uniform, np.repeat(chosen, counts), firsts + 2, sizes


def _skip_short_labels(buffer: np.ndarray, position: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """Past each series' leading labels of under 128 bytes (nearly all of them) in a few whole-array
    operations per label; what follows (a longer label, the samples) is left to the general step.
    None when a label runs past its series' end."""
    active = np.flatnonzero(position < ends)
    while len(active):
        at = position[active]
        short_label = (buffer[at] == _LABEL_TAG) & (buffer[at + 1] < 0x80)
        if not short_label.all():
            active, at = active[short_label], at[short_label]
        following = at + 2 + buffer[at + 1]
        if np.any(following > ends[active]):
            return None
        position[active] = following
        active = active[following < ends[active]]
    return position


def _samples(buffer: np.ndarray, at: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Sample messages as (timestamps, values). A field equal to zero is left out by senders (proto3),
    so a sample is: value then timestamp, either alone, or nothing at all."""
    end = at + size
    has_value = (size > 0) & (buffer[at] == _VALUE_TAG)
    timestamp_tag = np.where(has_value, at + 9, at)
    has_timestamp = (timestamp_tag < end) & (buffer[timestamp_tag] == _TIMESTAMP_TAG)
    timestamps, widths = varints_at(buffer, timestamp_tag + 1)
    parsed_to = np.where(has_timestamp, timestamp_tag + 1 + widths, timestamp_tag)
    if np.any(parsed_to != end) or np.any(has_timestamp & (widths == 0)):
        return None
    values = np.zeros(len(at), dtype=np.float64)
    if has_value.any():
        value_bytes = buffer[(at[has_value] + 1)[:, None] + _EIGHT]
        values[has_value] = value_bytes.reshape(-1).view("<f8")
    return np.where(has_timestamp, timestamps, 0), values


def _standard(data: bytes, max_samples: int) -> WriteColumns:
    try:
        message = wire.PromWriteRequest.FromString(data)
    except DecodeError:
        raise InvalidArgument("the body is not a remote-write WriteRequest (protobuf could not parse it)") from None
    if sum(len(series.samples) for series in message.timeseries) > max_samples:
        raise _too_many_samples(max_samples)
    keys: list[bytes] = []
    counts: list[int] = []
    times: list[int] = []
    values: list[float] = []
    exemplars = histograms = 0
    for series in message.timeseries:
        keys.append(wire.PromLabelsOnly(labels=series.labels).SerializeToString())
        counts.append(len(series.samples))
        times.extend(sample.timestamp for sample in series.samples)
        values.extend(sample.value for sample in series.samples)
        exemplars += len(series.exemplars)
        histograms += len(series.histograms)
    return WriteColumns(
        keys,
        np.array(counts, dtype=np.int64),
        np.array(times, dtype=np.int64),
        np.array(values, dtype=np.float64),
        [],
        exemplars,
        histograms,
    )


_FAMILY_SERIES = {
    wire.PromMetricMetadata.COUNTER: (("", MetricType.COUNTER),),
    wire.PromMetricMetadata.GAUGE: (("", MetricType.GAUGE),),
    wire.PromMetricMetadata.HISTOGRAM: (
        ("_bucket", MetricType.COUNTER),
        ("_sum", MetricType.COUNTER),
        ("_count", MetricType.COUNTER),
    ),
    wire.PromMetricMetadata.GAUGEHISTOGRAM: (
        ("_bucket", MetricType.GAUGE),
        ("_gsum", MetricType.GAUGE),
        ("_gcount", MetricType.GAUGE),
    ),
    wire.PromMetricMetadata.SUMMARY: (("_sum", MetricType.COUNTER), ("_count", MetricType.COUNTER)),
}
"""A metric family's type as the types of the series names it stands for (histograms and summaries
are stored as their counter series; a summary's quantiles keep no type)."""


def _metadata(items: list[wire.PromMetricMetadata]) -> tuple[list[MetricInfo | InvalidMetadata], list[FamilyInfo]]:
    """The per-name types the families imply, and the families as declared (the last declaration
    of a family in the request wins)."""
    declared: list[MetricInfo | InvalidMetadata] = []
    families: dict[str, FamilyInfo] = {}
    for item in items:
        name = item.metric_family_name
        try:
            validate_metric_info(MetricInfo(name, MetricType.UNSPECIFIED, item.unit, item.help))
        except InvalidArgument:
            continue  # descriptive only: what cannot be kept is left out, no sample depends on it
        kind = PROM_FAMILY_TYPES[item.type] if 0 <= item.type < len(PROM_FAMILY_TYPES) else "unknown"
        families[name] = FamilyInfo(name, kind, item.unit, item.help)
        for suffix, series_type in _FAMILY_SERIES.get(item.type, ()):
            declared.append(MetricInfo(name + suffix, series_type, item.unit, item.help))
    return declared, list(families.values())


class RemoteWriteSession:
    """One sender's ingest stream and the refs standing for the label sets it has sent.

    Requests of one sender may arrive concurrently (Prometheus sends on several shards); refs are
    handed out under a lock, and the stream's own per-sender lock orders the checks and marks."""

    def __init__(self, stream: IngestStream) -> None:
        self.stream = stream
        self._refs: dict[bytes, int] = {}
        self._lock = threading.Lock()

    @property
    def label_sets(self) -> int:
        return len(self._refs)

    def batch(self, columns: WriteColumns) -> BatchColumns:
        refs = self._refs
        labels: list[tuple[tuple[str, str], ...]] = [()] * len(columns.keys)
        with self._lock:
            found = list(map(refs.get, columns.keys))
            if None in found:  # label sets this sender has not sent before
                for index, ref in enumerate(found):
                    if ref is not None:
                        continue
                    key = columns.keys[index]
                    ref = refs.get(key)  # the same label set twice in one request
                    if ref is None:
                        ref = refs[key] = len(refs) + 1
                        labels[index] = _label_set(key)
                    found[index] = ref
        return BatchColumns(
            sequence=0,
            metadata=columns.metadata,
            labels=labels,
            refs=cast(list[int], found),  # every None was replaced above
            timestamp_counts=columns.sample_counts,
            value_counts=columns.sample_counts,
            timestamps=columns.timestamps,
            values=columns.values,
        )


def _label_set(key: bytes) -> tuple[tuple[str, str], ...]:
    try:
        parsed = wire.PromLabelsOnly.FromString(key)
    except DecodeError:
        raise InvalidArgument("a time series' labels are not valid protobuf") from None
    return tuple((label.name, label.value) for label in parsed.labels)


class RemoteWriteReceiver:
    """Remote-write requests in, prepared ingest batches out: one session per sender."""

    def __init__(self, ingestor: Ingestor) -> None:
        self._ingestor = ingestor
        self._sessions: dict[str, RemoteWriteSession] = {}
        self._lock = threading.Lock()

    def _session(self, writer_id: str, hostname: str) -> RemoteWriteSession:
        """The sender's session; a new one after a failed commit broke the old stream (the sender
        retries on the 5xx it got, and the new stream re-reads the marks from the store)."""
        with self._lock:
            session = self._sessions.get(writer_id)
            # A sender whose series churn (pods come and go) would grow its refs without end: past
            # twice its series limit the session starts afresh (label sets are resolved again once).
            if session is None or session.stream.broken or session.label_sets > 2 * session.stream.max_series:
                session = self._sessions[writer_id] = RemoteWriteSession(
                    self._ingestor.open_stream(writer_id, hostname, remote_writer=not hostname)
                )
            return session

    def prepare(self, writer_id: str, hostname: str, columns: WriteColumns) -> PreparedBatch:
        """Check the request and build its chunks (on an ingest thread); the commit comes next."""
        if columns.families:
            self._ingestor.catalog.describe_families(columns.families)
        session = self._session(writer_id, hostname)
        prepared = session.stream.prepare(session.batch(columns))
        for series in columns.oversized:
            prepared.result.reject(
                series.index,
                Reason.INVALID_LABELS,
                series.samples,
                f"a time series' labels are {series.label_bytes} bytes; no storable label set is over "
                f"{MAX_LABEL_SET_BYTES} bytes ({MAX_LABELS} labels, values of {MAX_LABEL_VALUE} characters)",
            )
        return prepared


def rejections_summary(prepared: PreparedBatch) -> str:
    """The batch's rejections for a person: counts by reason, then the first few messages."""
    result = prepared.result
    by_reason = ", ".join(f"{reason.name.lower()}: {count}" for reason, count in result.rejected_by_reason.items())
    examples = "; ".join(r.message for r in result.rejections[:3])
    return (
        f"{result.rejected} of {result.accepted + result.rejected + result.duplicate} samples were not stored "
        f"({by_reason}); {result.accepted} stored. First reasons: {examples}"
    )
