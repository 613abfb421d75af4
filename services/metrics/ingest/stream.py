"""Streaming ingest: one IngestStream per agent stream, batches in, acknowledgements out.

A batch is validated series by series (a bad series is rejected alone, with
its reason), filtered against each series' high-water mark (the newest
stored timestamp) so that a re-sent batch stores nothing twice, written as
chunks in one transaction, and only then acknowledged and published to
watchers.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from services.metrics.domain import (
    METRIC_NAME,
    IngestLimits,
    LabelSet,
    MetricInfo,
    MetricType,
    Reason,
    canonical,
    label_set_problem,
    validate_metric_info,
)
from services.metrics.storage.catalog import SeriesCatalog
from services.metrics.storage.chunks import Chunk, make_chunks, spacing
from services.metrics.storage.ports import SampleStore
from services.metrics.watch import Update, WatchHub

MAX_REJECTIONS_REPORTED = 100
NO_SAMPLES = -(2**63)


class IncomingSeries(NamedTuple):
    """One series of a batch as received: labels (or None to use `ref`) and columnar samples.

    A NamedTuple rather than a dataclass: one is built per series per batch on the hot path."""

    labels: Sequence[tuple[str, str]] | None
    ref: int
    timestamps: list[int]
    values: list[float]


@dataclass(frozen=True)
class IncomingBatch:
    sequence: int
    metadata: Sequence[MetricInfo]
    series: Sequence[IncomingSeries]


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

    def reject(self, index: int, reason: Reason, samples: int, message: str) -> None:
        self.rejected += samples
        if len(self.rejections) < MAX_REJECTIONS_REPORTED:
            self.rejections.append(Rejection(index, reason, samples, message))


class HighWaterMarks:
    """The newest stored timestamp per series, loaded from the store on first use."""

    def __init__(self, store: SampleStore) -> None:
        self._store = store
        self._marks: dict[int, int] = {}

    def load(self, series_ids: Sequence[int]) -> None:
        missing = [i for i in series_ids if i not in self._marks]
        if missing:
            found = self._store.newest_timestamps(missing)
            for series_id in missing:
                self._marks[series_id] = found.get(series_id, NO_SAMPLES)

    def get(self, series_id: int) -> int:
        return self._marks[series_id]

    def advance(self, series_id: int, timestamp: int) -> None:
        if timestamp > self._marks.get(series_id, NO_SAMPLES):
            self._marks[series_id] = timestamp


class Ingestor:
    """Process-wide ingest state shared by all streams."""

    def __init__(
        self,
        catalog: SeriesCatalog,
        store: SampleStore,
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

    def open_stream(self, agent_id: str) -> IngestStream:
        return IngestStream(self, agent_id)


class IngestStream:
    """The state of one StreamMetrics call: who is sending, and its label-set references."""

    def __init__(self, ingestor: Ingestor, agent_id: str) -> None:
        self._ingestor = ingestor
        self.agent_id = agent_id
        self._refs: dict[int, LabelSet] = {}
        self._declared: dict[str, MetricType] = {}
        self._problems: dict[LabelSet, tuple[Reason, str] | None] = {}

    def _declare(self, metadata: Sequence[MetricInfo]) -> None:
        for info in metadata:
            validate_metric_info(info)
            stored = self._ingestor.catalog.declare(info)
            self._declared[info.name] = info.type or stored.type

    def _problem(self, labels: LabelSet) -> tuple[Reason, str] | None:
        if labels not in self._problems:
            problem = label_set_problem(labels)
            if problem is None:
                name = dict(labels)[METRIC_NAME]
                declared = self._declared.get(name)
                known = self._ingestor.catalog.metric_info(name)
                if declared and known and declared != known.type:
                    problem = (
                        Reason.TYPE_CONFLICT,
                        f"metric {name} is stored as a {known.type.name.lower()}; "
                        f"this stream declared it a {declared.name.lower()}",
                    )
            self._problems[labels] = problem
        return self._problems[labels]

    def ingest(self, batch: IncomingBatch) -> BatchResult:
        """Store what is valid in the batch and say what was not; returns after the commit.

        Batches are handled one at a time: overlapping the next batch's Python work with this
        one's commit in a second thread was measured slower (GIL hand-offs cost more than the
        database wait it hides)."""
        ingestor = self._ingestor
        limits = ingestor.limits
        result = BatchResult(batch.sequence)
        if batch.metadata:
            self._declare(batch.metadata)
            self._problems.clear()

        resolved: list[tuple[int, LabelSet, IncomingSeries]] = []
        for index, item in enumerate(batch.series):
            if index >= limits.max_series_per_batch:
                result.reject(
                    index,
                    Reason.TOO_MANY_SERIES,
                    len(item.timestamps),
                    f"the batch holds {len(batch.series)} series; the limit is {limits.max_series_per_batch} "
                    "(INFRAWATCH_MAX_SERIES_PER_BATCH)",
                )
                continue
            if item.labels:
                labels = canonical(item.labels)
                if item.ref:
                    self._refs[item.ref] = labels
            else:
                found = self._refs.get(item.ref)
                if found is None:
                    result.reject(
                        index,
                        Reason.UNKNOWN_REF,
                        len(item.timestamps),
                        f"ref {item.ref} was not defined earlier on this stream; send the labels with it first",
                    )
                    continue
                labels = found
            if len(item.timestamps) != len(item.values):
                result.reject(
                    index,
                    Reason.LENGTH_MISMATCH,
                    max(len(item.timestamps), len(item.values)),
                    f"{len(item.timestamps)} timestamps but {len(item.values)} values",
                )
                continue
            if not item.timestamps:
                continue
            problem = self._problem(labels)
            if problem is not None:
                result.reject(index, problem[0], len(item.timestamps), problem[1])
                continue
            resolved.append((index, labels, item))

        catalog = ingestor.catalog
        unknown = [labels for _, labels, _ in resolved if catalog.series_id(labels) is None]
        created = catalog.create(self.agent_id, unknown, limits.max_series_per_agent) if unknown else {}

        with ingestor.agent_lock(self.agent_id):
            return self._write(result, resolved, created)

    def _write(
        self,
        result: BatchResult,
        resolved: list[tuple[int, LabelSet, IncomingSeries]],
        created: dict[LabelSet, int | str],
    ) -> BatchResult:
        ingestor = self._ingestor
        catalog, marks = ingestor.catalog, ingestor.marks
        now = ingestor.now_ms()
        newest_allowed = now + ingestor.limits.future_skew_ms
        oldest_allowed = now - ingestor.limits.retention_ms

        targets: list[tuple[int, int, IncomingSeries]] = []
        for index, labels, item in resolved:
            series_id = catalog.series_id(labels)
            if series_id is None:
                refusal = created.get(labels)
                result.reject(index, Reason.CARDINALITY_LIMIT, len(item.timestamps), str(refusal))
                continue
            targets.append((index, series_id, item))
        marks.load([series_id for _, series_id, _ in targets])

        chunks: list[Chunk] = []
        published: list[Update] = []
        advanced: list[tuple[int, int]] = []
        for index, series_id, item in targets:
            timestamps, values = item.timestamps, item.values
            mark = marks.get(series_id)
            interval = spacing(timestamps)
            if not (
                interval is not None
                and timestamps[0] > mark
                and timestamps[-1] <= newest_allowed
                and timestamps[0] >= oldest_allowed
            ):
                timestamps, values = self._filter(result, index, series_id, mark, item, newest_allowed, oldest_allowed)
                if not timestamps:
                    continue
                interval = None
            chunks.extend(make_chunks(series_id, timestamps, values, interval))
            result.accepted += len(timestamps)
            advanced.append((series_id, timestamps[-1]))
            if ingestor.hub.has_subscribers():
                published.append((catalog.get(series_id), timestamps, values))

        ingestor.store.append(chunks)
        for series_id, newest in advanced:
            marks.advance(series_id, newest)
        if published:
            ingestor.hub.publish(published)
        return result

    def _filter(
        self,
        result: BatchResult,
        index: int,
        series_id: int,
        mark: int,
        item: IncomingSeries,
        newest_allowed: int,
        oldest_allowed: int,
    ) -> tuple[list[int], list[float]]:
        """The slow path: sort, drop repeats, reject out-of-range samples, classify old ones."""
        ordered: dict[int, float] = {}
        for t, v in sorted(zip(item.timestamps, item.values, strict=True), key=lambda pair: pair[0]):
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
                f"{len(future)} samples are more than {self._ingestor.limits.future_skew_ms / 1000:g}s ahead "
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
