"""In-memory stand-ins for storage and the clock, for unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from types import TracebackType

from services.agents.domain import Agent, AgentQuery, AgentStatus, LivenessPolicy, RemoteWriteCredential
from services.metrics.domain import Aggregation, FamilyInfo, LabelSet, MetricInfo, Series
from services.metrics.query.aggregate import points_in_range, samples_of, whole_in_one_bucket
from services.metrics.storage.chunks import Chunk, ChunkColumns
from services.metrics.storage.columns import AggregationInput, DerivedReads, Points, Samples, Summaries
from services.metrics.storage.ports import TooManyPoints


class FakeAgentRepository:
    def __init__(self) -> None:
        self.rows: dict[str, Agent] = {}

    def get(self, agent_id: str) -> Agent | None:
        return self.rows.get(agent_id)

    def get_by_hostname(self, hostname: str) -> Agent | None:
        return next((a for a in self.rows.values() if a.hostname == hostname), None)

    def get_by_token_hash(self, token_hash: str) -> Agent | None:
        return next((a for a in self.rows.values() if a.token_hash == token_hash), None)

    def add(self, agent: Agent) -> None:
        self.rows[agent.agent_id] = agent

    def update(self, agent: Agent) -> None:
        self.rows[agent.agent_id] = agent

    def touch(self, agent_id: str, heartbeat_at_ms: int) -> None:
        self.rows[agent_id] = replace(self.rows[agent_id], last_heartbeat_at_ms=heartbeat_at_ms)

    def newest_heartbeat_ms(self) -> int | None:
        live = [a.last_heartbeat_at_ms for a in self.rows.values() if a.deregistered_at_ms is None]
        return max(live, default=None)

    def list(self, query: AgentQuery, policy: LivenessPolicy, now_ms: int) -> list[Agent]:
        wanted = query.statuses or frozenset(set(AgentStatus) - {AgentStatus.DEREGISTERED})
        matching = [
            a
            for a in sorted(self.rows.values(), key=lambda a: a.hostname)
            if a.hostname > query.after_hostname
            and policy.status_of(a, now_ms) in wanted
            and all(a.labels.get(k) == v for k, v in query.labels.items())
        ]
        if query.newest_heartbeat_first:
            unpaged = [
                a
                for a in self.rows.values()
                if policy.status_of(a, now_ms) in wanted and all(a.labels.get(k) == v for k, v in query.labels.items())
            ]
            return sorted(unpaged, key=lambda a: (-a.last_heartbeat_at_ms, a.hostname))[: query.page_size]
        return matching[: query.page_size + 1]

    def count_by_status(self, policy: LivenessPolicy, now_ms: int) -> dict[AgentStatus, int]:
        counts = dict.fromkeys(AgentStatus, 0)
        for agent in self.rows.values():
            counts[policy.status_of(agent, now_ms)] += 1
        return counts


class FakeRemoteWriteCredentials:
    def __init__(self) -> None:
        self.rows: dict[str, RemoteWriteCredential] = {}

    def add(self, credential: RemoteWriteCredential) -> None:
        self.rows[credential.credential_id] = credential

    def find(self, id_or_name: str) -> RemoteWriteCredential | None:
        return next((c for c in self.rows.values() if id_or_name in (c.credential_id, c.name)), None)

    def get_by_token_hash(self, token_hash: str) -> RemoteWriteCredential | None:
        return next((c for c in self.rows.values() if c.token_hash == token_hash), None)

    def list(self) -> list[RemoteWriteCredential]:
        return sorted(self.rows.values(), key=lambda c: c.name)

    def revoke(self, credential_id: str, revoked_at_ms: int) -> None:
        self.rows[credential_id] = replace(self.rows[credential_id], revoked_at_ms=revoked_at_ms)


class FakeUnitOfWork:
    """Applies writes to the shared repository only on commit, like a real transaction."""

    def __init__(self, store: FakeAgentRepository, writers: FakeRemoteWriteCredentials | None = None) -> None:
        self._store = store
        self._writers = writers if writers is not None else FakeRemoteWriteCredentials()
        self.commits = 0

    def __enter__(self) -> FakeUnitOfWork:
        self.agents = FakeAgentRepository()
        self.agents.rows = dict(self._store.rows)
        self.remote_writers = FakeRemoteWriteCredentials()
        self.remote_writers.rows = dict(self._writers.rows)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def commit(self) -> None:
        self._store.rows = dict(self.agents.rows)
        self._writers.rows = dict(self.remote_writers.rows)
        self.commits += 1


class FakeClock:
    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now = now_ms

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


class FakeSeriesStore:
    """Series and metric metadata in dictionaries."""

    def __init__(self) -> None:
        self.series: dict[LabelSet, Series] = {}
        self.infos: dict[str, MetricInfo] = {}
        self.families: dict[str, FamilyInfo] = {}

    def load_series(self, after_id: int) -> list[Series]:
        return sorted((s for s in self.series.values() if s.series_id > after_id), key=lambda s: s.series_id)

    def create_series(
        self, wanted: Sequence[tuple[LabelSet, str]], now_ms: int, by_writer: bool = False
    ) -> dict[LabelSet, Series]:
        for labels, agent_id in wanted:
            if labels not in self.series:
                self.series[labels] = Series(len(self.series) + 1, labels, agent_id, by_writer)
        return {labels: self.series[labels] for labels, _ in wanted}

    def watermark(self) -> tuple[int, int, int]:
        highest = max((s.series_id for s in self.series.values()), default=0)
        return highest, len(self.series), len(self.infos)

    def load_metric_infos(self) -> list[MetricInfo]:
        return list(self.infos.values())

    def save_metric_info(self, info: MetricInfo) -> None:
        known = self.infos.get(info.name)
        kept = known.type if known and known.type else info.type
        self.infos[info.name] = MetricInfo(info.name, kept, info.unit, info.help)

    def load_families(self) -> list[FamilyInfo]:
        return list(self.families.values())

    def save_families(self, families: Sequence[FamilyInfo]) -> None:
        self.families.update((family.name, family) for family in families)


class FakeSampleStore(DerivedReads):
    """Chunks in a list, the whole SampleStore port: reads in Python, answers computed by the same
    query module the real stores feed."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.appends = 0

    def append(self, chunks: ChunkColumns) -> None:
        self.appends += 1
        self.chunks.extend(chunks.to_chunks())

    def _of(self, series_id: int) -> list[Chunk]:
        return sorted((c for c in self.chunks if c.series_id == series_id), key=lambda c: c.start_ms)

    def latest(self, series_ids: Sequence[int]) -> dict[int, tuple[int, float]]:
        found = {}
        for i in series_ids:
            if chunks := self._of(i):
                found[i] = (chunks[-1].end_ms, chunks[-1].last)
        return found

    def series_with_samples(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> set[int]:
        return {i for i in series_ids if any(c.start_ms <= end_ms and c.end_ms >= start_ms for c in self._of(i))}

    def raw_samples(
        self, series_ids: Sequence[int], start_ms: int, end_ms: int, refuse_above: int | None = None
    ) -> Samples:
        wanted = set(series_ids)
        inside = sum(
            c.count for c in self.chunks if c.series_id in wanted and c.start_ms >= start_ms and c.end_ms <= end_ms
        )
        if refuse_above is not None and inside > refuse_above:
            raise TooManyPoints(inside)
        return samples_of((i, chunk) for i in series_ids for chunk in self._of(i)).within(start_ms, end_ms)

    def aggregation_input(
        self,
        groups: dict[int, int],
        read_from_ms: int,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        aggregation: Aggregation,
    ) -> AggregationInput:
        whole, partly = [], []
        for series_id, group in groups.items():
            for chunk in self._of(series_id):
                if chunk.end_ms < read_from_ms or chunk.start_ms > end_ms:
                    continue
                summarised = aggregation is not Aggregation.RATE and whole_in_one_bucket(
                    chunk.start_ms, chunk.end_ms, start_ms, end_ms, step_ms
                )
                if summarised:
                    row = (
                        group,
                        chunk.start_ms,
                        chunk.end_ms,
                        chunk.count,
                        chunk.sum,
                        chunk.min,
                        chunk.max,
                        chunk.last,
                    )
                    whole.append(row)
                else:
                    partly.append((group, chunk))
        samples = samples_of(partly).within(read_from_ms, end_ms)
        return AggregationInput(samples, Summaries.from_rows(whole) if whole else None)

    def drop_older_than(self, cutoff_ms: int) -> int:
        before = len(self.chunks)
        self.chunks = [c for c in self.chunks if c.end_ms >= cutoff_ms]
        return before - len(self.chunks)

    def compact(self, window_ms: int, since_ms: int, until_ms: int) -> int:
        return 0  # one list: nothing to pack

    def samples_of(self, series_id: int) -> Points:
        return points_in_range(self._of(series_id), -(2**62), 2**62)
