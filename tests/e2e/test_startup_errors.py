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
