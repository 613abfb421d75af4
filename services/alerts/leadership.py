"""Two alerts replicas, one voice: only the leader evaluates, writes and notifies.

On PostgreSQL the leader is whoever holds a session-level advisory lock, on a connection of
its own kept for as long as it leads. When the leader dies (kill -9 included), its connection
closes and PostgreSQL releases the lock at once; a follower, trying every second, takes over
and continues from what the leader persisted (alerts with their `for` state, what each
receiver was told). A leader whose connection fails steps down at once, so two never act
together. The lock is keyed by the schema too, so several InfraWatch installations may share
one database. The embedded SQLite store is one process's: its only replica leads.

A follower serves the API from the store: it reloads the alerts the leader persisted every
second, and tells its watchers what changed.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

from sqlalchemy import Connection, Engine, text

from agent.logs import event
from services.common.db import is_postgres, unreachable_database_errors

_log = logging.getLogger("infrawatch.alerts.leadership")
LOCK_NAME = "infrawatch-alerts-leader"


class Leadership(Protocol):
    def lead(self) -> bool:
        """Whether this replica leads now: takes the lead when it is free, verifies it when held."""
        ...

    def release(self) -> None: ...


class SoleReplica:
    """The embedded store has one replica, which always leads."""

    def lead(self) -> bool:
        return True

    def release(self) -> None:
        pass


class PostgresLeadership:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        self._held = False
        self._errors = unreachable_database_errors()

    def lead(self) -> bool:
        try:
            if self._connection is None:
                self._connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if self._held:
                self._connection.execute(text("SELECT 1"))  # still connected, so still holding it
                return True
            got = self._connection.execute(
                text("SELECT pg_try_advisory_lock(hashtext(:name), hashtext(current_schema()))"), {"name": LOCK_NAME}
            ).scalar()
            self._held = bool(got)
            if self._held:
                event(_log, "this replica leads: it evaluates rules and sends notifications")
            return self._held
        except self._errors as exc:
            if self._held:
                event(_log, "lost the database connection; no longer leading", logging.WARNING, error=str(exc)[:200])
            self._drop()
            return False

    def _drop(self) -> None:
        self._held = False
        if self._connection is not None:
            try:
                self._connection.invalidate()
                self._connection.close()
            except self._errors:
                pass
        self._connection = None

    def release(self) -> None:
        if self._connection is not None and self._held:
            with contextlib.suppress(*self._errors):
                self._connection.execute(
                    text("SELECT pg_advisory_unlock(hashtext(:name), hashtext(current_schema()))"), {"name": LOCK_NAME}
                )
        if self._connection is not None:
            with contextlib.suppress(*self._errors):
                self._connection.close()
        self._connection = None
        self._held = False


def leadership_for(engine: Engine) -> Leadership:
    return PostgresLeadership(engine) if is_postgres(engine) else SoleReplica()
