"""Running InfraWatch services as child processes: for the benchmarks and the end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from agent.tls import ClientTLS
from services import launcher

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_serving(address: str, service: str = "", timeout: float = 30, tls: ClientTLS | None = None) -> None:
    if not launcher.wait_serving(address, service, timeout, tls=tls):
        raise TimeoutError(f"{address} did not report SERVING for {service!r} within {timeout}s")


class ServiceProcess:
    """A service started with `python -m module`, its output captured to a log file."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path, args: list[str] | None = None) -> None:
        self.module = module
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *(args or [])],
            env={**os.environ, **env},
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM and wait: the exit code of a graceful shutdown."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout)
        self._log.flush()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if not self._log.closed:
            self._log.close()
