"""Fixtures shared by every test tier: database engines for both backends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
import trustme
from hypothesis import settings
from sqlalchemy import Engine, create_engine, text

from services.common.db import create_db_engine, with_driver

POSTGRES_URL = os.environ.get("INFRAWATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Property-based tests explore new examples on every local run (a failure prints how to replay
# it); CI runs a fixed set, so that a red CI always means a change broke something.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile("ci" if IN_CI else "explore")


def unavailable(message: str) -> NoReturn:
    """A dependency the tests need is missing: skip on a laptop, fail in CI (CI=true), where
    .ci/run provides everything."""
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


def _postgres_reachable() -> str | None:
    try:
        probe = create_engine(with_driver(POSTGRES_URL), connect_args={"connect_timeout": 3})
        with probe.connect() as connection:
            connection.execute(text("SELECT 1"))
        probe.dispose()
        return None
    except Exception as exc:
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL URL for tests; skips without a server, but fails in CI (CI=true)."""
    problem = _postgres_reachable()
    if problem is not None:
        unavailable(f"PostgreSQL is not reachable at {POSTGRES_URL}: {problem}")
    return POSTGRES_URL


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A URL whose connections live in a fresh schema, dropped after the test."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(with_driver(postgres_url))
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


@dataclass(frozen=True)
class TlsFiles:
    """PEM files made at test time: a CA, a server certificate for localhost and 127.0.0.1, a
    client certificate from the same CA, and a client certificate from a CA nobody trusts."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    rogue_cert: str
    rogue_key: str


def _write_pair(cert: trustme.LeafCert, directory: Path, name: str) -> tuple[str, str]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_path))
    return str(cert_path), str(key_path)


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    directory = tmp_path / "tls"
    directory.mkdir()
    ca, rogue_ca = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server = _write_pair(ca.issue_cert("localhost", "127.0.0.1"), directory, "server")
    client = _write_pair(ca.issue_cert("infrawatch-client"), directory, "client")
    rogue = _write_pair(rogue_ca.issue_cert("infrawatch-client"), directory, "rogue")
    return TlsFiles(str(directory / "ca.pem"), *server, *client, *rogue)
