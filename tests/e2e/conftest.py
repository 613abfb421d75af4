from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.tls import ClientTLS
from tests.conftest import unavailable
from tests.e2e.processes import RECIPE_SECRETS, ServiceProcess, free_port, wait_serving

AGENTS_SERVICE = "infrawatch.agents.v1.AgentService"
METRICS_SERVICE = "infrawatch.metrics.v1.MetricsService"
GATEWAY_SERVICE = "infrawatch.gateway.v1.OperatorService"
ALERTS_SERVICE_NAME = "infrawatch.alerts.v1.AlertService"
ENROLLMENT_TOKEN = RECIPE_SECRETS["enrollment-token"]
ENROLL_HEADER = f"authorization: Bearer {ENROLLMENT_TOKEN}"
TELEMETRY_SERVICES = ("AGENTS", "METRICS", "GATEWAY", "ALERTS", "CONSOLE")


@pytest.fixture(params=["sqlite", "postgres"])
def e2e_database_url(request: pytest.FixtureRequest) -> str:
    """Empty for the embedded SQLite default, else a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return ""
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def platform_env(tmp_path: Path, e2e_database_url: str) -> dict[str, str]:
    """The environment every service of one test platform shares, with free ports."""
    agents_port, metrics_port, gateway_port, alerts_port = free_port(), free_port(), free_port(), free_port()
    return {
        "INFRAWATCH_CONSOLE_PORT": str(free_port()),
        "INFRAWATCH_GATEWAY_ADDRESS": f"127.0.0.1:{gateway_port}",
        "INFRAWATCH_ALERTS_PORT": str(alerts_port),
        "INFRAWATCH_ALERTS_ADDRESS": f"127.0.0.1:{alerts_port}",
        "INFRAWATCH_GATEWAY_PORT": str(gateway_port),
        "INFRAWATCH_AGENTS_PORT": str(agents_port),
        "INFRAWATCH_METRICS_PORT": str(metrics_port),
        "INFRAWATCH_AGENTS_ADDRESS": f"127.0.0.1:{agents_port}",
        "INFRAWATCH_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
        **{f"INFRAWATCH_{name}_TELEMETRY_PORT": str(free_port()) for name in TELEMETRY_SERVICES},
        "INFRAWATCH_PROM_PORT": str(free_port()),
        "INFRAWATCH_AGENT_TELEMETRY_ADDRESS": f"127.0.0.1:{free_port()}",
        "INFRAWATCH_DATA_DIR": str(tmp_path / "data"),
        "INFRAWATCH_DATABASE_URL": e2e_database_url,
        "INFRAWATCH_OPERATOR_TOKEN": RECIPE_SECRETS["operator-token"],
        "INFRAWATCH_SERVICE_TOKEN": "e2e-service",
        "INFRAWATCH_ENROLLMENT_TOKEN": ENROLLMENT_TOKEN,
        "INFRAWATCH_AGENT_ENROLLMENT_TOKEN": ENROLLMENT_TOKEN,
        "INFRAWATCH_SHUTDOWN_GRACE": "2s",
        # Liveness in seconds rather than minutes, so tests can watch a host go OFFLINE.
        "INFRAWATCH_HEARTBEAT_INTERVAL": "1s",
        "INFRAWATCH_STALE_AFTER_INTERVALS": "2",
        "INFRAWATCH_OFFLINE_AFTER_INTERVALS": "3",
        "INFRAWATCH_WATCH_STATUS_EVERY": "200ms",
    }


def start(
    module: str, env: dict[str, str], port_var: str, service: str, log: Path, tls: ClientTLS | None = None
) -> tuple[ServiceProcess, str]:
    process = ServiceProcess(module, env, log)
    address = f"127.0.0.1:{env[port_var]}"
    try:
        wait_serving(address, service, tls=tls)
    except TimeoutError:
        process.kill()
        pytest.fail(f"{module} never became healthy:\n{process.log()}")
    return process, address


@pytest.fixture
def agents_process(platform_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[ServiceProcess, str]]:
    process, address = start(
        "services.agents", platform_env, "INFRAWATCH_AGENTS_PORT", AGENTS_SERVICE, tmp_path / "agents.log"
    )
    yield process, address
    process.kill()


@pytest.fixture
def metrics_process(
    platform_env: dict[str, str], agents_process: tuple[ServiceProcess, str], tmp_path: Path
) -> Iterator[tuple[ServiceProcess, str]]:
    process, address = start(
        "services.metrics", platform_env, "INFRAWATCH_METRICS_PORT", METRICS_SERVICE, tmp_path / "metrics.log"
    )
    yield process, address
    process.kill()


@pytest.fixture
def gateway_process(
    platform_env: dict[str, str], metrics_process: tuple[ServiceProcess, str], tmp_path: Path
) -> Iterator[tuple[ServiceProcess, str]]:
    process, address = start(
        "services.gateway", platform_env, "INFRAWATCH_GATEWAY_PORT", GATEWAY_SERVICE, tmp_path / "gateway.log"
    )
    yield process, address
    process.kill()


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        unavailable(
            f"no {name} on PATH (Debian packages prometheus and prometheus-node-exporter; .ci/run installs them)"
        )
    return found


@pytest.fixture
def node_exporter(tmp_path: Path) -> Iterator[str]:
    exporter = binary("prometheus-node-exporter")
    port = free_port()
    process = subprocess.Popen(
        [exporter, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "node-exporter.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, (tmp_path / "node-exporter.log").read_text()
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(10)
