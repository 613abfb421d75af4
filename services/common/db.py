"""Database engines and schema migrations for both supported stores.

PostgreSQL (through psycopg2) is the production store; SQLite is the
embedded default so the platform runs with nothing to install. Each service
gets its own SQLite file and its own alembic version table, so no service
can see another's schema.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text

from agent.logs import event as log_event

_log = logging.getLogger("infrawatch.db")


def database_url(configured: str, data_dir: str, service: str) -> str:
    """The configured URL, or the service's own SQLite file under `data_dir`."""
    if configured:
        return configured
    path = private_file(Path(data_dir) / f"{service}.db")
    return f"sqlite:///{path.resolve()}"


def private_file(path: Path) -> Path:
    """`path` made readable by its owner only, in a directory likewise (0700/0600): the stores hold
    every series and token hash, and SQLite gives its -wal and -shm files the main file's mode.
    A directory or file this process does not own keeps its mode (a volume prepared by an admin)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(PermissionError):
        path.parent.chmod(0o700)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    with contextlib.suppress(PermissionError):
        path.chmod(0o600)
    return path


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # These two take effect only while the file has no table yet. 16 KiB pages keep a row of up to
    # ~4 KB in its page (a metrics chunk of six hours is 1-3 KB); with 4 KiB pages, a row above
    # ~1 KB spills into an overflow page of its own, mostly empty.
    cursor.execute("PRAGMA page_size=16384")
    # A new database gives freed pages back to
    # the file system when a store asks (PRAGMA incremental_vacuum), so its size follows its data.
    cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
    # WAL lets readers run while ingest writes; synchronous=FULL makes a commit durable
    # before it returns, which is what an acknowledgement promises.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def with_driver(url: str) -> str:
    """Pin PostgreSQL URLs to psycopg2, the driver InfraWatch ships (SQLAlchemy 2.1 defaults to psycopg 3)."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url.removeprefix(scheme)
    return url


def create_db_engine(url: str, **options: Any) -> Engine:
    """An engine for `url` with the settings InfraWatch relies on for that backend."""
    url = with_driver(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10}, **options)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    options.setdefault("pool_pre_ping", True)
    options.setdefault("pool_size", 10)
    options.setdefault("max_overflow", 10)
    # The most recently used connection first: it has the prepared statements (ReadCursor) and
    # warm caches, and the ones left idle can be closed by the database or a proxy.
    options.setdefault("pool_use_lifo", True)
    engine = create_engine(url, **options)
    event.listen(engine, "connect", _postgres_session)
    return engine


def _postgres_session(dbapi_connection: Any, _record: Any) -> None:
    # JIT compilation kicks in on the cost estimates of the aggregation queries and spends about
    # half a second compiling plans that then run in tens of milliseconds.
    cursor = dbapi_connection.cursor()
    cursor.execute("SET jit = off")
    # Only statements prepared by ReadCursor.execute_prepared are affected: their generic plans
    # (index lookups per selected series, partitions pruned at run time) are as fast as custom
    # ones, so the five custom plannings PostgreSQL would otherwise make first are skipped.
    cursor.execute("SET plan_cache_mode = force_generic_plan")
    cursor.close()
    dbapi_connection.commit()


def _connection_errors(engine: Engine) -> tuple[type[BaseException], ...]:
    dbapi = engine.dialect.dbapi
    return (dbapi.OperationalError, dbapi.InterfaceError) if dbapi is not None else ()


@contextmanager
def _checked_out(engine: Engine) -> Iterator[Any]:
    """A pooled DBAPI connection, given back afterwards. One that fails with a connection-level
    error is invalidated so the pool never hands it out again, which is what lets hot-path
    engines skip the ping on every checkout."""
    connection = engine.raw_connection()
    try:
        yield connection
    except _connection_errors(engine):
        connection.invalidate()
        raise
    finally:
        connection.close()


@contextmanager
def pooled_cursor(engine: Engine, commit: bool = False) -> Iterator[Any]:
    """A DBAPI cursor on a pooled connection, for hot paths that bypass SQLAlchemy's statement layer.

    Commits when `commit` and the block succeeds, rolls back otherwise."""
    with _checked_out(engine) as connection:
        try:
            yield connection.cursor()
            if commit:
                connection.commit()
            else:
                connection.rollback()
        except _connection_errors(engine):
            raise  # the connection is invalidated: a rollback on it would only fail again
        except BaseException:
            connection.rollback()
            raise


_NAMED_PARAMETER = re.compile(r"%\((\w+)\)s")


@functools.cache
def _prepared_form(sql: str) -> tuple[str, tuple[str, ...]]:
    """`sql` with its %(name)s parameters numbered $1, $2, ... in order of first use, and the names."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _NAMED_PARAMETER.sub(number, sql), tuple(names)


class ReadCursor:
    """A DBAPI cursor plus `execute_prepared`, which on PostgreSQL plans a statement once per
    connection (PREPARE) and afterwards only executes it: the fleet query's plan took 0.7 ms to
    make, longer than running it on compacted chunks. Elsewhere it simply executes."""

    def __init__(self, cursor: Any, prepared: set[str] | None) -> None:
        self.cursor = cursor
        self._prepared = prepared

    def execute(self, sql: str, params: Any = None) -> None:
        self.cursor.execute(sql, params)

    def fetchall(self) -> list[Any]:
        return list(self.cursor.fetchall())

    def fetchone(self) -> Any:
        return self.cursor.fetchone()

    def execute_prepared(self, name: str, sql: str, params: dict[str, Any]) -> None:
        if self._prepared is None:
            self.cursor.execute(sql, params)
            return
        body, names = _prepared_form(sql)
        if name not in self._prepared:
            self.cursor.execute(f"PREPARE {name} AS {body}")
            self._prepared.add(name)
        arguments = ", ".join(f"%({n})s" for n in names)
        self.cursor.execute(f"EXECUTE {name} ({arguments})" if names else f"EXECUTE {name}", params)


@contextmanager
def pooled_read_cursor(engine: Engine) -> Iterator[ReadCursor]:
    """A cursor for read-only statements. On PostgreSQL the connection runs in autocommit for
    it, so no transaction is opened and none has to be rolled back afterwards: that rollback was a
    network round trip per query (~0.1 ms of a 1 ms query)."""
    if not is_postgres(engine):
        with pooled_cursor(engine) as cursor:
            yield ReadCursor(cursor, None)
        return
    with _checked_out(engine) as connection:
        driver: Any = connection.driver_connection
        # Prepared statements live as long as the database connection, as does its pool record's info.
        prepared = connection.info.setdefault("prepared_statements", set())
        try:
            driver.autocommit = True
            yield ReadCursor(connection.cursor(), prepared)
            driver.autocommit = False
        except _connection_errors(engine):
            raise  # invalidated by _checked_out
        except BaseException:
            driver.rollback()
            driver.autocommit = False
            raise


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def check_database(engine: Engine) -> bool:
    """True when a trivial query succeeds; used by health checks."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception as exc:
        log_event(_log, "database check failed", logging.WARNING, error=str(exc).splitlines()[0])
        return False


def migrate(engine: Engine, migrations_dir: Path, version_table: str, revision: str = "head") -> None:
    """Bring the schema to the newest version (or to `revision`, which tests of upgrades use).

    On PostgreSQL an advisory lock keyed by the version table serialises
    replicas that start at the same moment, so migrations run exactly once.
    """
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["version_table"] = version_table
    with engine.begin() as connection:
        if is_postgres(engine):
            lock_key = zlib.crc32(version_table.encode())
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    log_event(_log, "schema up to date", version_table=version_table)


def unreachable_database_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the database could not be reached or dropped the connection (or, on
    SQLite, stayed locked): a client should retry, so the server answers UNAVAILABLE."""
    import sqlite3

    import psycopg2
    from sqlalchemy import exc

    return (
        exc.OperationalError,
        exc.InterfaceError,
        psycopg2.OperationalError,
        psycopg2.InterfaceError,
        sqlite3.OperationalError,
    )


_DRIVER_PREFIX = re.compile(r"^\((?:[\w.]+)\)\s*")
_CONNECT_PREFIX = re.compile(r"^connection to server (?:at|on) .*? failed:\s*")


def database_problem(exc: BaseException) -> str:
    """What is wrong with the database, in one short line a person can act on ("database \"x\"
    does not exist", "Connection refused", "no such table: agents"): the driver's first line
    without the SQLAlchemy wrapper, the server address or the SQL."""
    text_ = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = text_[0] if text_ else type(exc).__name__
    first = _CONNECT_PREFIX.sub("", _DRIVER_PREFIX.sub("", first))
    first = re.sub(r"^FATAL:\s*", "", first).strip()
    return re.sub(r"\s+", " ", first)[:160] or type(exc).__name__
