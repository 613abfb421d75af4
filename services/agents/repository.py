"""SQLAlchemy Core implementation of the agents repository and unit of work."""

from __future__ import annotations

from collections import defaultdict
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, delete, exists, func, insert, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from services.agents.domain import Agent, AgentQuery, AgentStatus, Inventory, LivenessPolicy, RemoteWriteCredential
from services.agents.tables import agent_labels, agents, remote_write_credentials


def _agent_row(agent: Agent) -> dict[str, Any]:
    return {
        "agent_id": agent.agent_id,
        "hostname": agent.hostname,
        "agent_version": agent.agent_version,
        "os": agent.os,
        "arch": agent.arch,
        "cpu_count": agent.inventory.cpu_count,
        "memory_total_bytes": agent.inventory.memory_total_bytes,
        "kernel_version": agent.inventory.kernel_version,
        "boot_time_ms": agent.inventory.boot_time_ms,
        "token_hash": agent.token_hash,
        "registered_at_ms": agent.registered_at_ms,
        "last_heartbeat_at_ms": agent.last_heartbeat_at_ms,
        "deregistered_at_ms": agent.deregistered_at_ms,
        "registration_approved": agent.registration_approved,
        "refused_registrations": agent.refused_registrations,
        "last_refused_registration_at_ms": agent.last_refused_registration_at_ms,
    }


def _agent_from(row: Any, labels: dict[str, str]) -> Agent:
    return Agent(
        agent_id=row.agent_id,
        hostname=row.hostname,
        agent_version=row.agent_version,
        os=row.os,
        arch=row.arch,
        labels=labels,
        inventory=Inventory(
            cpu_count=row.cpu_count,
            memory_total_bytes=row.memory_total_bytes,
            kernel_version=row.kernel_version,
            boot_time_ms=row.boot_time_ms,
        ),
        registered_at_ms=row.registered_at_ms,
        last_heartbeat_at_ms=row.last_heartbeat_at_ms,
        token_hash=row.token_hash,
        deregistered_at_ms=row.deregistered_at_ms,
        registration_approved=row.registration_approved,
        refused_registrations=row.refused_registrations,
        last_refused_registration_at_ms=row.last_refused_registration_at_ms,
    )


def _status_condition(status: AgentStatus, policy: LivenessPolicy, now_ms: int) -> ColumnElement[bool]:
    """The SQL twin of LivenessPolicy.status_of, so filtering happens in the database."""
    if status is AgentStatus.DEREGISTERED:
        return agents.c.deregistered_at_ms.is_not(None)
    live = agents.c.deregistered_at_ms.is_(None)
    beat: ColumnElement[int] = agents.c.last_heartbeat_at_ms
    downtime = policy.downtime
    if downtime.paused_ms:
        beat = case(
            (
                agents.c.last_heartbeat_at_ms < downtime.resumed_at_ms,
                agents.c.last_heartbeat_at_ms + downtime.paused_ms,
            ),
            else_=agents.c.last_heartbeat_at_ms,
        )
    if status is AgentStatus.ONLINE:
        return and_(live, beat >= policy.online_since_ms(now_ms))
    if status is AgentStatus.STALE:
        return and_(live, beat < policy.online_since_ms(now_ms), beat >= policy.stale_since_ms(now_ms))
    return and_(live, beat < policy.stale_since_ms(now_ms))


class SqlAgentRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def _labels_of(self, agent_ids: list[str]) -> dict[str, dict[str, str]]:
        labels: dict[str, dict[str, str]] = defaultdict(dict)
        if agent_ids:
            rows = self._connection.execute(select(agent_labels).where(agent_labels.c.agent_id.in_(agent_ids)))
            for row in rows:
                labels[row.agent_id][row.name] = row.value
        return labels

    def _one(self, condition: ColumnElement[bool]) -> Agent | None:
        row = self._connection.execute(select(agents).where(condition)).first()
        if row is None:
            return None
        return _agent_from(row, self._labels_of([row.agent_id])[row.agent_id])

    def get(self, agent_id: str) -> Agent | None:
        return self._one(agents.c.agent_id == agent_id)

    def get_by_hostname(self, hostname: str) -> Agent | None:
        return self._one(agents.c.hostname == hostname)

    def get_by_token_hash(self, token_hash: str) -> Agent | None:
        return self._one(agents.c.token_hash == token_hash)

    def _write_labels(self, agent: Agent) -> None:
        self._connection.execute(delete(agent_labels).where(agent_labels.c.agent_id == agent.agent_id))
        if agent.labels:
            self._connection.execute(
                insert(agent_labels),
                [{"agent_id": agent.agent_id, "name": k, "value": v} for k, v in agent.labels.items()],
            )

    def add(self, agent: Agent) -> None:
        self._connection.execute(insert(agents).values(_agent_row(agent)))
        self._write_labels(agent)

    def update(self, agent: Agent) -> None:
        self._connection.execute(update(agents).where(agents.c.agent_id == agent.agent_id).values(_agent_row(agent)))
        self._write_labels(agent)

    def touch(self, agent_id: str, heartbeat_at_ms: int) -> None:
        self._connection.execute(
            update(agents).where(agents.c.agent_id == agent_id).values(last_heartbeat_at_ms=heartbeat_at_ms)
        )

    def list(self, query: AgentQuery, policy: LivenessPolicy, now_ms: int) -> list[Agent]:
        after = "" if query.newest_heartbeat_first else query.after_hostname
        statement = select(agents).where(agents.c.hostname > after)
        if query.statuses:
            statement = statement.where(or_(*(_status_condition(s, policy, now_ms) for s in query.statuses)))
        else:
            statement = statement.where(agents.c.deregistered_at_ms.is_(None))
        for name, value in query.labels.items():
            statement = statement.where(
                exists().where(
                    agent_labels.c.agent_id == agents.c.agent_id,
                    agent_labels.c.name == name,
                    agent_labels.c.value == value,
                )
            )
        if query.newest_heartbeat_first:
            statement = statement.order_by(agents.c.last_heartbeat_at_ms.desc(), agents.c.hostname)
            statement = statement.limit(query.page_size)
        else:
            statement = statement.order_by(agents.c.hostname).limit(query.page_size + 1)
        rows = self._connection.execute(statement).all()
        labels = self._labels_of([row.agent_id for row in rows])
        return [_agent_from(row, labels[row.agent_id]) for row in rows]

    def count_by_status(self, policy: LivenessPolicy, now_ms: int) -> dict[AgentStatus, int]:
        # One pass over the table, whatever its size: a sum per status of the same conditions
        # that filter listings.
        statuses = list(AgentStatus)
        row = self._connection.execute(
            select(
                *(
                    func.coalesce(func.sum(case((_status_condition(s, policy, now_ms), 1), else_=0)), 0)
                    for s in statuses
                )
            )
        ).one()
        return {status: int(count) for status, count in zip(statuses, row, strict=True)}

    def newest_heartbeat_ms(self) -> int | None:
        return self._connection.execute(
            select(func.max(agents.c.last_heartbeat_at_ms)).where(agents.c.deregistered_at_ms.is_(None))
        ).scalar()


class SqlRemoteWriteCredentialRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def _one(self, condition: ColumnElement[bool]) -> RemoteWriteCredential | None:
        row = self._connection.execute(select(remote_write_credentials).where(condition)).first()
        return RemoteWriteCredential(**row._mapping) if row is not None else None

    def add(self, credential: RemoteWriteCredential) -> None:
        self._connection.execute(insert(remote_write_credentials).values(**credential.__dict__))

    def find(self, id_or_name: str) -> RemoteWriteCredential | None:
        table = remote_write_credentials.c
        return self._one(or_(table.credential_id == id_or_name, table.name == id_or_name))

    def get_by_token_hash(self, token_hash: str) -> RemoteWriteCredential | None:
        return self._one(remote_write_credentials.c.token_hash == token_hash)

    def list(self) -> list[RemoteWriteCredential]:
        rows = self._connection.execute(select(remote_write_credentials).order_by(remote_write_credentials.c.name))
        return [RemoteWriteCredential(**row._mapping) for row in rows]

    def revoke(self, credential_id: str, revoked_at_ms: int) -> None:
        self._connection.execute(
            update(remote_write_credentials)
            .where(remote_write_credentials.c.credential_id == credential_id)
            .values(revoked_at_ms=revoked_at_ms)
        )


class SqlUnitOfWork:
    """A connection and a transaction; rolled back unless committed."""

    agents: SqlAgentRepository
    remote_writers: SqlRemoteWriteCredentialRepository

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __enter__(self) -> SqlUnitOfWork:
        self._connection = self._engine.connect()
        self._transaction = self._connection.begin()
        self.agents = SqlAgentRepository(self._connection)
        self.remote_writers = SqlRemoteWriteCredentialRepository(self._connection)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._transaction.is_active:
            self._transaction.rollback()
        self._connection.close()

    def commit(self) -> None:
        self._transaction.commit()
