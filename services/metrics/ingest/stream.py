"""Streaming ingest: one IngestStream per agent stream, batches in, acknowledgements out.

A batch arrives as columns (`ingest.columns.BatchColumns`). Label sets are
resolved once per stream (refs and label sets map to series ids in per-stream
dicts), so a steady-state batch costs one dict lookup per series and whole-array
work per sample: lengths, ordering, spacing, clock skew, retention and the
high-water mark (the newest stored timestamp) are checked for all series at
once, summaries come from `reduceat`, and the chunks go to the store as
columns. Only a series that fails a check takes the per-sample slow path
(sort, drop repeats, classify re-sent samples against the store). A batch is
written in one transaction (the server's `GroupCommitter` shares that
transaction between the batches of many streams) and only then acknowledged
and published to watchers.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from services.common.errors import InvalidArgument, Unavailable
from services.metrics.domain import (
    HOST_LABEL,
    METRIC_NAME,
    IngestLimits,
    InvalidMetadata,
    LabelSet,
    MetricInfo,
    MetricType,
    Reason,
    canonical,
    label_set_problem,
    validate_metric_info,
)
from services.metrics.ingest.columns import BatchColumns, index_ranges
from services.metrics.storage.catalog import SeriesCatalog
from services.metrics.storage.chunks import MAX_CHUNK_SPAN_MS, ChunkColumns, make_chunks, segment_summaries
from services.metrics.storage.ports import Appender
from services.metrics.watch import Update, WatchHub

MAX_REJECTIONS_REPORTED = 100
NO_SAMPLES = -(2**63)
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Rejection:
    series_index: int
    reason: Reason
    samples: int
    message: str


@dataclass
class BatchResult:
    sequence: int
    accepted: int = 0
    rejected: int = 0
    duplicate: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    rejected_by_reason: dict[Reason, int] = field(default_factory=dict)

    def reject(self, index: int, reason: Reason, samples: int, message: str) -> None:
        self.rejected += samples
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + samples
        if len(self.rejections) < MAX_REJECTIONS_REPORTED:
            self.rejections.append(Rejection(index, reason, samples, message))


class HighWaterMarks:
    """The newest stored timestamp per series id, in one array indexed by the (dense) id.

    A stream reads each of its series' marks from the store the first time it sends that series
    (`reload`), so a batch re-sent to this replica after another replica stored it (and perhaps
    compacted it) is recognised; after that the mark is advanced here on every commit."""

    def __init__(self, store: Appender) -> None:
        self._store = store
        self._marks = np.full(1024, NO_SAMPLES, dtype=np.int64)
        self._stale = np.zeros(1024, dtype=bool)

    def _fit(self, highest: int) -> None:
        if highest >= len(self._marks):
            size = max(highest + 1, 2 * len(self._marks))
            grown = np.full(size, NO_SAMPLES, dtype=np.int64)
            grown[: len(self._marks)] = self._marks
            stale = np.zeros(size, dtype=bool)
            stale[: len(self._stale)] = self._stale
            self._marks, self._stale = grown, stale

    def invalidate(self, series_ids: np.ndarray) -> None:
        """These marks may be ahead of the store (a write failed): re-read them before use."""
        if len(series_ids):
            self._fit(int(series_ids.max()))
            self._stale[series_ids] = True

    def stale(self, series_ids: np.ndarray) -> list[int]:
        if not len(series_ids) or int(series_ids.max()) >= len(self._stale):
            return []
        flagged = series_ids[self._stale[series_ids]]
        return flagged.tolist() if len(flagged) else []

    def reload(self, series_ids: Sequence[int]) -> None:
        if not series_ids:
            return
        found = self._store.newest_timestamps(series_ids)
        self._fit(max(series_ids))
        for series_id in series_ids:
            self._marks[series_id] = found.get(series_id, NO_SAMPLES)
            self._stale[series_id] = False

    def of(self, series_ids: np.ndarray) -> np.ndarray:
        return self._marks[series_ids]

    def advance(self, series_ids: np.ndarray, newest: np.ndarray) -> None:
        self._fit(int(series_ids.max()))
        np.maximum.at(self._marks, series_ids, newest)


class RefIds:
    """Series ids by the refs a stream defined: a dict, mirrored in an array for refs numbered
    densely from 1 (as agents and remote-write sessions number them), so a steady batch's ids are
    one array lookup instead of a dict lookup per series."""

    DENSE_LIMIT = 1 << 22

    def __init__(self) -> None:
        self._by_ref: dict[int, int] = {}
        self._table = np.full(0, -1, dtype=np.int64)

    def get(self, ref: int, default: int = -1) -> int:
        return self._by_ref.get(ref, default)

    def __setitem__(self, ref: int, series_id: int) -> None:
        self._by_ref[ref] = series_id
        if 0 <= ref < self.DENSE_LIMIT:
            if ref >= len(self._table):
                grown = np.full(min(self.DENSE_LIMIT, max(ref + 1, 2 * len(self._table), 1024)), -1, dtype=np.int64)
                grown[: len(self._table)] = self._table
                self._table = grown
            self._table[ref] = series_id

    def pop(self, ref: int) -> None:
        self._by_ref.pop(ref, None)
        if 0 <= ref < len(self._table):
            self._table[ref] = -1

    def clear(self) -> None:
        self._by_ref.clear()
        self._table[:] = -1

    def many(self, refs: Sequence[int]) -> np.ndarray:
        """The ids of `refs`, -1 where a ref has none."""
        wanted = np.asarray(refs, dtype=np.int64)
        if len(wanted) and wanted.min() >= 0 and wanted.max() < len(self._table):
            return self._table[wanted]
        return np.fromiter((self._by_ref.get(ref, -1) for ref in refs), dtype=np.int64, count=len(refs))


class Ingestor:
    """Process-wide ingest state shared by all streams."""

    def __init__(
        self,
        catalog: SeriesCatalog,
        store: Appender,
        hub: WatchHub,
        limits: IngestLimits,
        now_ms: Callable[[], int],
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.hub = hub
        self.limits = limits
        self.now_ms = now_ms
        self.marks = HighWaterMarks(store)
        self._agent_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()

    def agent_lock(self, agent_id: str) -> threading.Lock:
        """Serialises the batches of one agent so the high-water-mark check and the write are atomic."""
        with self._locks_guard:
            return self._agent_locks[agent_id]

    def open_stream(self, agent_id: str, hostname: str = "", remote_writer: bool = False) -> IngestStream:
        """A stream of the authenticated agent; with `hostname`, every series it writes is that
        host's (`host` is set from the credential, whatever the payload says). Without one (a
        remote-write sender) labels are kept as sent. A `remote_writer` creates series up to the
        per-writer limit rather than the per-agent one."""
        return IngestStream(self, agent_id, hostname, remote_writer)


@dataclass(slots=True)
class _Accepted:
    """The batch's series that passed the per-series checks, as positions into the batch."""

    index: np.ndarray  # positions in the batch
    series_id: np.ndarray


@dataclass(slots=True)
class PreparedBatch:
    """A checked batch: its acknowledgement-to-be and the chunks to write."""

    stream: IngestStream
    result: BatchResult
    chunks: ChunkColumns


class IngestStream:
    """The state of one StreamMetrics call: who is sending, its label-set refs and what it resolved."""

    def __init__(self, ingestor: Ingestor, agent_id: str, hostname: str = "", remote_writer: bool = False) -> None:
        self._ingestor = ingestor
        self.agent_id = agent_id
        self.hostname = hostname
        self.remote_writer = remote_writer
        self.broken = False
        self._uncommitted = 0
        self._settled = threading.Condition()
        self._refs: dict[int, LabelSet] = {}
        self._declared: dict[str, MetricType] = {}
        self._invalid_metadata: dict[str, str] = {}
        self._ids_by_ref = RefIds()
        self._ids_by_labels: dict[LabelSet, int] = {}
        self._verified: set[int] = set()

    @property
    def max_series(self) -> int:
        """The series this sender may create."""
        limits = self._ingestor.limits
        return limits.max_series_per_writer if self.remote_writer else limits.max_series_per_agent

    @property
    def _limit_setting(self) -> str:
        return "INFRAWATCH_MAX_SERIES_PER_WRITER" if self.remote_writer else "INFRAWATCH_MAX_SERIES_PER_AGENT"

    def _owned(self, labels: LabelSet) -> LabelSet:
        """The label set with `host` set to the authenticated agent's hostname: identity comes from
        the credential, so no agent can write (or poison) another host's series."""
        if not self.hostname or (HOST_LABEL, self.hostname) in labels:
            return labels
        return canonical([*(pair for pair in labels if pair[0] != HOST_LABEL), (HOST_LABEL, self.hostname)])

    def _declare(self, metadata: Sequence[MetricInfo | InvalidMetadata]) -> None:
        """Record the stream's metadata.

        From an InfraWatch agent, metadata is a contract: an invalid entry does not end the stream,
        but the series of that name are rejected (INVALID_METADATA) until the stream sends valid
        metadata for it, and a type other than the stored one is a TYPE_CONFLICT. From a remote
        writer it is what Prometheus treats it as, a description: it is recorded (and a conflicting
        declaration listed for operators), and never a reason to refuse a sample."""
        catalog = self._ingestor.catalog
        for info in metadata:
            if isinstance(info, MetricInfo):
                try:
                    validate_metric_info(info)
                except InvalidArgument as exc:
                    info = InvalidMetadata(info.name, str(exc))
            if self.remote_writer:
                if isinstance(info, MetricInfo):
                    catalog.declare(info, self.agent_id)
                continue
            if isinstance(info, InvalidMetadata):
                self._invalid_metadata[info.name] = info.problem
                continue
            self._invalid_metadata.pop(info.name, None)
            stored = catalog.declare(info, self.agent_id)
            self._declared[info.name] = info.type or stored.type
        if not self.remote_writer:
            # A declaration can make a label set conflict (or stop conflicting): resolve again.
            self._ids_by_ref.clear()
            self._ids_by_labels.clear()

    def _problem(self, labels: LabelSet) -> tuple[Reason, str] | None:
        problem = label_set_problem(labels)
        if problem is None and not self.remote_writer:
            name = dict(labels)[METRIC_NAME]
            if name in self._invalid_metadata:
                return (
                    Reason.INVALID_METADATA,
                    f"the metadata this stream sent for {name} is invalid ({self._invalid_metadata[name][:200]}); "
                    "send valid metadata for it",
                )
            declared = self._declared.get(name)
            known = self._ingestor.catalog.metric_info(name)
            if declared and known and known.type and declared != known.type:
                problem = (
                    Reason.TYPE_CONFLICT,
                    f"metric {name} is stored as a {known.type.name.lower()}; "
                    f"this stream declared it a {declared.name.lower()}",
                )
        return problem

    def _foreign(self, series_id: int) -> str | None:
        """Why this sender may not write into the series, or None when it may: a series belongs to
        the kind of sender that created it (an agent's series carry its host label, so agents are
        already kept apart from each other; remote-write credentials share their series, so a
        rotated credential keeps writing what the old one wrote)."""
        owner = self._ingestor.catalog.get(series_id)
        if owner.by_writer == self.remote_writer:
            return None
        if owner.by_writer:
            return (
                "the series was created by a remote-write credential; an InfraWatch agent cannot write into it "
                "(drop or relabel it on the Prometheus side)"
            )
        host = dict(owner.labels).get(HOST_LABEL, "?")
        return (
            f"the series belongs to the InfraWatch agent {owner.agent_id} (host {host}); "
            "a remote-write credential cannot write into an agent's series (relabel it, e.g. drop the host label)"
        )

    def ingest(self, batch: BatchColumns) -> BatchResult:
        """Store what is valid in the batch and say what was not; returns after the commit.

        The one-call form of prepare → append → committed (the server goes through a
        `GroupCommitter` instead, which writes many streams' batches in one transaction)."""
        prepared = self.prepare(batch)
        try:
            self._ingestor.store.append(prepared.chunks)
        except BaseException:
            self.failed(prepared)
            raise
        self.committed(prepared)
        return prepared.result

    def prepare(self, batch: BatchColumns) -> PreparedBatch:
        """Check the batch and turn what is valid into chunks, ready to write.

        The series' marks advance here, before the write, so that the stream's next batch can be
        prepared while this one commits; a failed write (`failed`) marks them for re-reading."""
        if self.broken:
            raise Unavailable("an earlier batch of this stream failed to commit; reconnect and re-send")
        result = BatchResult(batch.sequence)
        if batch.metadata:
            self._declare(batch.metadata)
        # Resolution is under the agent's lock too: it creates series, which the per-agent
        # cardinality limit counts.
        with self._ingestor.agent_lock(self.agent_id):
            accepted = self._resolve(batch, result)
            chunks = self._chunks(batch, accepted, result)
            if len(chunks):
                self._ingestor.marks.advance(chunks.series_id, chunks.end_ms)
        result.accepted += chunks.samples
        with self._settled:
            self._uncommitted += 1
        return PreparedBatch(self, result, chunks)

    def _settle(self) -> None:
        with self._settled:
            self._uncommitted -= 1
            self._settled.notify_all()

    def _wait_for_commits(self) -> None:
        """Until this stream's earlier batches are written: classifying samples against the store
        needs them there (a re-send right behind its original, on the same stream)."""
        with self._settled:
            self._settled.wait_for(lambda: self._uncommitted == 0 or self.broken, timeout=60)

    def committed(self, prepared: PreparedBatch) -> None:
        """The batch is durable: show it to watchers."""
        self._settle()
        hub = self._ingestor.hub
        if len(prepared.chunks) and hub.has_subscribers():
            hub.publish(self._updates(prepared.chunks))

    def failed(self, prepared: PreparedBatch) -> None:
        """The batch's write failed: nothing more from this stream may be written, and the marks
        the batch advanced are re-read from the store by whoever uses them next."""
        self.broken = True
        self._ingestor.marks.invalidate(prepared.chunks.series_id)
        self._settle()

    def _resolve(self, batch: BatchColumns, result: BatchResult) -> _Accepted:
        """Series ids for the batch's series; rejects what cannot be stored, series by series."""
        limits = self._ingestor.limits
        count = len(batch)
        ids = np.full(count, -1, dtype=np.int64)
        canonicals: dict[int, LabelSet] = {}
        if not any(batch.labels):
            # Steady state: refs only, each resolved earlier on this stream.
            ids[:] = self._ids_by_ref.many(batch.refs)
        else:
            for index, (labels, ref) in enumerate(zip(batch.labels, batch.refs, strict=True)):
                if labels:
                    canon = canonicals[index] = self._owned(canonical(labels))
                    found = self._ids_by_labels.get(canon, -1)
                    if ref:
                        self._refs[ref] = canon
                        self._ids_by_ref.pop(ref)
                        if found >= 0:
                            self._ids_by_ref[ref] = found
                    ids[index] = found
                else:
                    ids[index] = self._ids_by_ref.get(ref, -1)

        samples = np.maximum(batch.timestamp_counts, batch.value_counts)
        usable = (batch.timestamp_counts == batch.value_counts) & (batch.value_counts > 0)
        usable[limits.max_series_per_batch :] = False
        pending = np.flatnonzero((ids < 0) | ~usable).tolist()
        if pending:
            self._resolve_slowly(batch, pending, ids, usable, samples, result, canonicals)
        chosen = np.flatnonzero(usable & (ids >= 0))
        return _Accepted(chosen, ids[chosen])

    def _resolve_slowly(
        self,
        batch: BatchColumns,
        pending: list[int],
        ids: np.ndarray,
        usable: np.ndarray,
        samples: np.ndarray,
        result: BatchResult,
        canonicals: dict[int, LabelSet],
    ) -> None:
        """First sight of a label set or ref on this stream, and every rejected series."""
        ingestor = self._ingestor
        limits = ingestor.limits
        unknown: dict[LabelSet, list[int]] = {}
        for index in pending:
            size = int(samples[index])
            if index >= limits.max_series_per_batch:
                result.reject(
                    index,
                    Reason.TOO_MANY_SERIES,
                    size,
                    f"the batch holds {len(batch)} series; the limit is {limits.max_series_per_batch} "
                    "(INFRAWATCH_MAX_SERIES_PER_BATCH)",
                )
                continue
            labels = canonicals.get(index) or self._refs.get(batch.refs[index])
            if labels is None:
                result.reject(
                    index,
                    Reason.UNKNOWN_REF,
                    size,
                    f"ref {batch.refs[index]} was not defined earlier on this stream; send the labels with it first",
                )
                continue
            times, values = int(batch.timestamp_counts[index]), int(batch.value_counts[index])
            if times != values:
                message = f"{times} timestamps but {values} values"
                if times == 0:
                    message = (
                        f"{values} values without timestamps_ms: set start_ms, and interval_ms > 0 "
                        "when there is more than one value"
                    )
                result.reject(index, Reason.LENGTH_MISMATCH, size, message)
                continue
            if not values:
                continue
            if ids[index] >= 0:
                continue
            problem = self._problem(labels)
            if problem is not None:
                result.reject(index, problem[0], size, problem[1])
                usable[index] = False
                continue
            unknown.setdefault(labels, []).append(index)
        if not unknown:
            return
        catalog = ingestor.catalog
        missing = [labels for labels in unknown if catalog.series_id(labels) is None]
        refusals = (
            catalog.create(
                self.agent_id,
                missing,
                self.max_series,
                limits.max_series_total,
                self._limit_setting,
                by_writer=self.remote_writer,
            )
            if missing
            else {}
        )
        for labels, positions in unknown.items():
            series_id = catalog.series_id(labels)
            if series_id is None:
                for index in positions:
                    result.reject(index, Reason.CARDINALITY_LIMIT, int(samples[index]), str(refusals.get(labels)))
                    usable[index] = False
                continue
            foreign = self._foreign(series_id)
            if foreign is not None:
                for index in positions:
                    result.reject(index, Reason.FOREIGN_SERIES, int(samples[index]), foreign)
                    usable[index] = False
                continue
            self._ids_by_labels[labels] = series_id
            for index in positions:
                ids[index] = series_id
                if not batch.labels[index] or batch.refs[index]:
                    self._ids_by_ref[batch.refs[index]] = series_id

    def _chunks(self, batch: BatchColumns, accepted: _Accepted, result: BatchResult) -> ChunkColumns:
        ingestor = self._ingestor
        if not len(accepted.index):
            return ChunkColumns.empty()
        unverified = {sid for sid in set(accepted.series_id.tolist()) if sid not in self._verified}
        unverified.update(ingestor.marks.stale(accepted.series_id))
        if unverified:
            ingestor.marks.reload(sorted(unverified))
            self._verified.update(unverified)

        now = ingestor.now_ms()
        newest_allowed = now + ingestor.limits.future_skew_ms
        oldest_allowed = now - ingestor.limits.retention_ms
        counts = batch.value_counts[accepted.index]
        everything = len(accepted.index) == len(batch)
        if everything:
            times, values = batch.timestamps, batch.values
        else:
            # Rejected series may hold different numbers of timestamps and values: each column
            # is cut along its own boundaries.
            time_starts = np.cumsum(batch.timestamp_counts) - batch.timestamp_counts
            value_starts = np.cumsum(batch.value_counts) - batch.value_counts
            times = batch.timestamps[index_ranges(time_starts[accepted.index], counts)]
            values = batch.values[index_ranges(value_starts[accepted.index], counts)]
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        ends = starts + counts - 1
        first, last = times[starts], times[ends]
        low_gap, high_gap = _gaps(times, starts, counts)
        marks = ingestor.marks.of(accepted.series_id)
        fast = (
            (low_gap > 0)
            & (first > marks)
            & (last <= newest_allowed)
            & (first >= oldest_allowed)
            & (last - first <= MAX_CHUNK_SPAN_MS)
        )
        _, first_seen, occurrences = np.unique(accepted.series_id, return_index=True, return_counts=True)
        if len(first_seen) != len(accepted.series_id):
            # One series twice in a batch: its entries are handled in order on the slow path.
            repeated = np.isin(accepted.series_id, accepted.series_id[first_seen[occurrences > 1]])
            fast &= ~repeated

        parts: list[ChunkColumns] = []
        fast_rows = np.flatnonzero(fast)
        if len(fast_rows):
            total, low, high = segment_summaries(values, starts)
            regular = (low_gap == high_gap) & (counts > 1)
            if len(fast_rows) == len(counts):
                fast_times, fast_values = times, values
            else:
                positions = index_ranges(starts[fast_rows], counts[fast_rows])
                fast_times, fast_values = times[positions], values[positions]
            parts.append(
                ChunkColumns(
                    series_id=accepted.series_id[fast_rows],
                    interval_ms=np.where(regular, low_gap, 0)[fast_rows],
                    counts=counts[fast_rows],
                    timestamps=fast_times,
                    values=fast_values,
                    sum=total[fast_rows],
                    min=low[fast_rows],
                    max=high[fast_rows],
                )
            )
        slow_rows = np.flatnonzero(~fast).tolist()
        if slow_rows:
            parts.append(
                self._slow(result, accepted, slow_rows, starts, counts, times, values, (oldest_allowed, newest_allowed))
            )
        return ChunkColumns.concat(parts)

    def _updates(self, chunks: ChunkColumns) -> list[Update]:
        catalog = self._ingestor.catalog
        bounds = chunks.bounds.tolist()
        times, values = chunks.timestamps.tolist(), chunks.values.tolist()
        return [
            (catalog.get(series_id), times[bounds[i] : bounds[i + 1]], values[bounds[i] : bounds[i + 1]])
            for i, series_id in enumerate(chunks.series_id.tolist())
        ]

    def _slow(
        self,
        result: BatchResult,
        accepted: _Accepted,
        rows: list[int],
        starts: np.ndarray,
        counts: np.ndarray,
        times: np.ndarray,
        values: np.ndarray,
        allowed: tuple[int, int],
    ) -> ChunkColumns:
        """Series that are unsorted, repeat timestamps, reach behind their mark or out of bounds."""
        ingestor = self._ingestor
        marks: dict[int, int] = {}
        chunks = []
        for row in rows:
            series_id = int(accepted.series_id[row])
            mark = marks.get(series_id)
            if mark is None:
                mark = int(ingestor.marks.of(np.array([series_id]))[0])
            lo, hi = int(starts[row]), int(starts[row] + counts[row])
            keep_times, keep_values = self._filter(
                result,
                int(accepted.index[row]),
                series_id,
                mark,
                times[lo:hi].tolist(),
                values[lo:hi].tolist(),
                allowed,
            )
            if keep_times:
                chunks.extend(make_chunks(series_id, keep_times, keep_values))
                marks[series_id] = keep_times[-1]
        return ChunkColumns.from_chunks(chunks)

    def _filter(
        self,
        result: BatchResult,
        index: int,
        series_id: int,
        mark: int,
        times: list[int],
        values: list[float],
        allowed: tuple[int, int],
    ) -> tuple[list[int], list[float]]:
        """The slow path: sort, drop repeats, reject out-of-range samples, classify old ones."""
        limits = self._ingestor.limits
        oldest_allowed, newest_allowed = allowed
        ordered: dict[int, float] = {}
        for t, v in sorted(zip(times, values, strict=True), key=lambda pair: pair[0]):
            if t in ordered:
                result.duplicate += 1
            else:
                ordered[t] = v
        future = [t for t in ordered if t > newest_allowed]
        if future:
            result.reject(
                index,
                Reason.TOO_FAR_IN_FUTURE,
                len(future),
                f"{len(future)} samples are more than {limits.future_skew_ms / 1000:g}s ahead "
                "of the server clock (INFRAWATCH_MAX_FUTURE_SKEW)",
            )
        old = [t for t in ordered if t < oldest_allowed]
        if old:
            result.reject(
                index,
                Reason.TOO_OLD,
                len(old),
                f"{len(old)} samples are older than the retention period (INFRAWATCH_RETENTION)",
            )
        behind = [t for t in ordered if oldest_allowed <= t <= mark]
        if behind:
            self._wait_for_commits()
            stored = self._ingestor.store.stored_timestamps(series_id, behind[0], behind[-1])
            duplicates = sum(1 for t in behind if t in stored)
            result.duplicate += duplicates
            if len(behind) > duplicates:
                result.reject(
                    index,
                    Reason.OUT_OF_ORDER,
                    len(behind) - duplicates,
                    f"{len(behind) - duplicates} samples are older than the newest stored sample of the series",
                )
        keep = [t for t in ordered if mark < t <= newest_allowed and t >= oldest_allowed]
        return keep, [ordered[t] for t in keep]


def _gaps(times: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest gap between consecutive timestamps of each series (both 1 for a
    single sample, which counts as ascending): low > 0 means strictly ascending, low == high evenly
    spaced. Gaps across two series are masked so they never count."""
    low = np.ones(len(counts), dtype=np.int64)
    high = np.ones(len(counts), dtype=np.int64)
    several = counts > 1
    if not several.any():
        return low, high
    gaps = np.diff(times)
    across = starts[1:] - 1
    low_gaps, high_gaps = gaps.copy(), gaps
    low_gaps[across] = _INT64_MAX
    high_gaps[across] = NO_SAMPLES
    begin = starts[several]
    low[several] = np.minimum.reduceat(low_gaps, begin)
    high[several] = np.maximum.reduceat(high_gaps, begin)
    return low, high
