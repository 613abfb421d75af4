"""The seams between the metrics use cases and storage, as narrow protocols.

Ingest needs an `Appender`, queries a `Querier`, the background upkeep a
`Maintenance`; each store implements all three (`SampleStore`), but no use case
sees more of it than its own port.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.metrics.domain import Aggregation, FamilyInfo, LabelSet, MetricInfo, Series
from services.metrics.storage.chunks import ChunkColumns
from services.metrics.storage.columns import AggregationInput, Points, Samples


class TooManyPoints(Exception):
    """A raw read refused from the chunks' sample counts alone, before any sample was read."""

    def __init__(self, at_least: int) -> None:
        super().__init__(f"at least {at_least} points")
        self.at_least = at_least


class SeriesStore(Protocol):
    def load_series(self, after_id: int) -> list[Series]:
        """Series with an id greater than `after_id`, in id order."""
        ...

    def create_series(
        self, wanted: Sequence[tuple[LabelSet, str]], now_ms: int, by_writer: bool = False
    ) -> dict[LabelSet, Series]:
        """The series of the label sets, creating the missing ones (owned by the agent or, `by_writer`,
        the remote-write credential named beside each); one another process created first comes back
        with its own owner. Safe to call concurrently."""
        ...

    def watermark(self) -> tuple[int, int, int]:
        """(highest series id, series count, metric name count), to skip reloads when nothing changed."""
        ...

    def load_metric_infos(self) -> list[MetricInfo]: ...

    def save_metric_info(self, info: MetricInfo) -> None:
        """Insert, or update unit and help; the first type a name gets is kept (UNSPECIFIED, a name
        seen before any metadata, is not a type: a later declaration replaces it)."""
        ...

    def load_families(self) -> list[FamilyInfo]: ...

    def save_families(self, families: Sequence[FamilyInfo]) -> None:
        """Insert or replace each family's metadata: the latest declaration is what is shown."""
        ...


class Appender(Protocol):
    """What ingest needs: write chunks, and know what is already stored."""

    def append(self, chunks: ChunkColumns) -> None:
        """Store chunks in one transaction; when it returns they are durable."""
        ...

    def newest_timestamps(self, series_ids: Sequence[int]) -> dict[int, int]:
        """The newest stored timestamp of each series that has samples."""
        ...

    def stored_timestamps(self, series_id: int, start_ms: int, end_ms: int) -> set[int]: ...


class Querier(Protocol):
    """What the query use cases need."""

    def raw(
        self, series_ids: Sequence[int], start_ms: int, end_ms: int, refuse_above: int | None = None
    ) -> dict[int, Points]:
        """Samples within [start_ms, end_ms] of each series, ascending. With `refuse_above`, raises
        TooManyPoints before any sample is read when the chunks lying wholly inside the range
        already hold more samples than that (their counts are a lower bound of the answer)."""
        ...

    def raw_samples(
        self, series_ids: Sequence[int], start_ms: int, end_ms: int, refuse_above: int | None = None
    ) -> Samples:
        """What `raw` reads, as numpy columns (series id, time, value; ascending per series), for
        callers that compute on them (PromQL) rather than send them."""
        ...

    def aggregation_input(
        self,
        groups: dict[int, int],
        read_from_ms: int,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        aggregation: Aggregation,
    ) -> AggregationInput:
        """What an aggregation of these series (series id → group number) over buckets of `step_ms`
        from `start_ms` needs from storage: the samples within [read_from_ms, end_ms] of every chunk
        no stored summary answers, and the summaries (or, summed by the database, the per-bucket
        rollups) of the chunks lying wholly inside one bucket of [start_ms, end_ms]. With RATE
        every sample is read, none summarised. `query.aggregate` computes the answer."""
        ...

    def latest(self, series_ids: Sequence[int]) -> dict[int, tuple[int, float]]: ...

    def series_with_samples(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> set[int]:
        """The ids among these with a chunk overlapping [start_ms, end_ms]: which series have data in
        a window, at chunk granularity (as Prometheus' index answers /api/v1/series), without
        reading a sample."""
        ...


class Maintenance(Protocol):
    """What the background upkeep needs."""

    def drop_older_than(self, cutoff_ms: int) -> int:
        """Remove samples older than cutoff_ms (whole partitions where possible); returns units dropped."""
        ...

    def compact(self, window_ms: int, since_ms: int, until_ms: int) -> int:
        """Pack each series' chunks within every aligned window, and then every 6-hour block, that
        closed in [since_ms, until_ms) into one (in pieces where one row cannot hold it); returns
        the number of chunk rows merged away (never negative, for the telemetry counter)."""
        ...


class SampleStore(Appender, Querier, Maintenance, Protocol):
    """A whole sample store: what the composition root builds and hands out port by port."""
