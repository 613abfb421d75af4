"""`make run`'s launcher, as a new user meets it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import TELEMETRY_SERVICES
from tests.e2e.processes import REPO, free_port


def test_a_service_that_cannot_start_is_named_at_once_and_everything_stops(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "INFRAWATCH_DATA_DIR": str(tmp_path),
            "INFRAWATCH_DATABASE_URL": "",
            "INFRAWATCH_AGENTS_PORT": str(free_port()),
            "INFRAWATCH_GATEWAY_PORT": str(free_port()),
            "INFRAWATCH_METRICS_PORT": str(port),
            "INFRAWATCH_LOG_LEVEL": "WARNING",
            **{f"INFRAWATCH_{name}_TELEMETRY_PORT": str(free_port()) for name in TELEMETRY_SERVICES},
            "INFRAWATCH_AGENT_TELEMETRY_ADDRESS": f"127.0.0.1:{free_port()}",
        }
        # A ready timeout far beyond this test's own: only noticing the exit can end the run in time.
        run = subprocess.run(
            [sys.executable, "-m", "services.launcher", "--ready-timeout", "3600"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert run.returncode == 1
    assert "launcher: metrics exited with code" in run.stderr
    assert f"localhost:{port} already in use" in run.stderr
