"""Running InfraWatch services as child processes: for the benchmarks and the end-to-end tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

from agent.tls import ClientTLS
from services import launcher

REPO = Path(__file__).resolve().parents[1]


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range: a port taken from that range
    (bind to 0) can be handed, before the service binds it, to some client's outgoing connection
    as its local port — an occasional 'address already in use' in tests that start many services."""
    low, _ = _ephemeral_range()
    candidates = list(range(max(1024, low - 12_000), low))
    random.shuffle(candidates)
    for port in candidates:
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:  # nothing free below the range: fall back to the kernel's choice
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
