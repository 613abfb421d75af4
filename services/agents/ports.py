"""The seams of the agents use cases: what they need from storage, as protocols."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from services.agents.domain import Agent, AgentQuery, AgentStatus, LivenessPolicy, RemoteWriteCredential


class AgentRepository(Protocol):
    def get(self, agent_id: str) -> Agent | None: ...

    def get_by_hostname(self, hostname: str) -> Agent | None: ...

    def get_by_token_hash(self, token_hash: str) -> Agent | None: ...

    def add(self, agent: Agent) -> None: ...

    def update(self, agent: Agent) -> None: ...

    def touch(self, agent_id: str, heartbeat_at_ms: int) -> None:
        """Record a heartbeat without rewriting the rest of the agent."""
        ...

    def newest_heartbeat_ms(self) -> int | None:
        """The newest heartbeat of any registered agent; None when there is none."""
        ...

    def list(self, query: AgentQuery, policy: LivenessPolicy, now_ms: int) -> list[Agent]:
        """Agents after `query.after_hostname` in hostname order, at most `query.page_size + 1`; or, with
        `query.newest_heartbeat_first`, the `query.page_size` heard from last."""
        ...

    def count_by_status(self, policy: LivenessPolicy, now_ms: int) -> dict[AgentStatus, int]:
        """Agents per status, every status present (0 where none)."""
        ...


class RemoteWriteCredentialRepository(Protocol):
    def add(self, credential: RemoteWriteCredential) -> None: ...

    def find(self, id_or_name: str) -> RemoteWriteCredential | None: ...

    def get_by_token_hash(self, token_hash: str) -> RemoteWriteCredential | None: ...

    def list(self) -> list[RemoteWriteCredential]:
        """All credentials, revoked ones included, by name."""
        ...

    def revoke(self, credential_id: str, revoked_at_ms: int) -> None: ...


class UnitOfWork(Protocol):
    """One transaction: nothing is stored unless `commit` is called before the block ends."""

    @property
    def agents(self) -> AgentRepository: ...

    @property
    def remote_writers(self) -> RemoteWriteCredentialRepository: ...

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...
