from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import ServiceProcess, free_port, wait_serving


@pytest.fixture(params=["sqlite", "postgres"])
def e2e_database_url(request: pytest.FixtureRequest) -> str:
    """Empty for the embedded SQLite default, else a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return ""
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def agents_process(tmp_path: Path, e2e_database_url: str) -> Iterator[tuple[ServiceProcess, str]]:
    port = free_port()
    process = ServiceProcess(
        "services.agents",
        {
            "INFRAWATCH_AGENTS_PORT": str(port),
            "INFRAWATCH_DATA_DIR": str(tmp_path / "data"),
            "INFRAWATCH_DATABASE_URL": e2e_database_url,
            "INFRAWATCH_OPERATOR_TOKEN": "e2e-operator",
            "INFRAWATCH_SHUTDOWN_GRACE": "2s",
        },
        tmp_path / "agents.log",
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_serving(address, "infrawatch.agents.v1.AgentService")
    except TimeoutError:
        process.kill()
        pytest.fail(f"agents service never became healthy:\n{process.log()}")
    yield process, address
    process.kill()
