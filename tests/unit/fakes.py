"""In-memory stand-ins for storage and the clock, for unit tests."""

from __future__ import annotations

from dataclasses import replace
from types import TracebackType

from services.agents.domain import Agent, AgentQuery, AgentStatus, LivenessPolicy


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

    def list(self, query: AgentQuery, policy: LivenessPolicy, now_ms: int) -> list[Agent]:
        wanted = query.statuses or frozenset(set(AgentStatus) - {AgentStatus.DEREGISTERED})
        matching = [
            a
            for a in sorted(self.rows.values(), key=lambda a: a.hostname)
            if a.hostname > query.after_hostname
            and policy.status_of(a, now_ms) in wanted
            and all(a.labels.get(k) == v for k, v in query.labels.items())
        ]
        return matching[: query.page_size + 1]


class FakeUnitOfWork:
    """Applies writes to the shared repository only on commit, like a real transaction."""

    def __init__(self, store: FakeAgentRepository) -> None:
        self._store = store
        self.commits = 0

    def __enter__(self) -> FakeUnitOfWork:
        self.agents = FakeAgentRepository()
        self.agents.rows = dict(self._store.rows)
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
        self.commits += 1


class FakeClock:
    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now = now_ms

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)
