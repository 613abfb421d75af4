"""Issue 26: start-up errors a person understands. A port that is taken (gRPC, the console, the
Prometheus side) ends the service with one line naming the address and the setting to change
(exit 2), not a Python traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import TELEMETRY_SERVICES
from tests.e2e.processes import REPO, free_port


@pytest.mark.parametrize(
    ("service", "setting"),
    [
        ("agents", "INFRAWATCH_AGENTS_PORT"),
        ("metrics", "INFRAWATCH_METRICS_PORT"),
        ("alerts", "INFRAWATCH_ALERTS_PORT"),
        ("gateway", "INFRAWATCH_GATEWAY_PORT"),
        ("console", "INFRAWATCH_CONSOLE_PORT"),
        ("metrics", "INFRAWATCH_PROM_PORT"),
    ],
)
def test_a_taken_port_is_one_line_naming_the_setting(service: str, setting: str, tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            **{f"INFRAWATCH_{name}_PORT": str(free_port()) for name in (*TELEMETRY_SERVICES, "PROM")},
            **{f"INFRAWATCH_{name}_TELEMETRY_PORT": "off" for name in TELEMETRY_SERVICES},
            setting: str(port),
            "INFRAWATCH_BIND_HOST": "127.0.0.1",
            "INFRAWATCH_DATA_DIR": str(tmp_path),
            "INFRAWATCH_DATABASE_URL": "",
            "INFRAWATCH_SERVICE_TOKEN": "startup-errors-service-token",
            "INFRAWATCH_OPERATOR_TOKEN": "startup-errors-operator-token",
            "INFRAWATCH_ENROLLMENT_TOKEN": "startup-errors-enrollment-token",
        }
        run = subprocess.run(
            [sys.executable, "-m", f"services.{service}"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"python -m services.{service}: cannot listen on 127.0.0.1:{port}")
    assert f"set {setting} to a free port" in last


@pytest.mark.parametrize(("bind_host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_the_console_warns_when_it_serves_plain_http_beyond_loopback(bind_host: str, warned: bool, tmp_path: Path):
    import time

    from services.processes import ServiceProcess

    port = free_port()
    env = {
        "INFRAWATCH_CONSOLE_PORT": str(port),
        "INFRAWATCH_CONSOLE_TELEMETRY_PORT": "off",
        "INFRAWATCH_BIND_HOST": bind_host,
        "INFRAWATCH_DATA_DIR": str(tmp_path),
        "INFRAWATCH_OPERATOR_TOKEN": "startup-errors-operator-token",
    }
    console = ServiceProcess("services.console", env, tmp_path / "console.log")
    try:
        deadline = time.monotonic() + 30
        while "console listening" not in console.log():
            assert console.process.poll() is None and time.monotonic() < deadline, console.log()
            time.sleep(0.1)
        assert ("serving plaintext beyond loopback" in console.log()) is warned, console.log()
        if warned:
            assert "put the console behind a TLS-terminating proxy" in console.log()
    finally:
        console.terminate()
        console.kill()
