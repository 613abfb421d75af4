"""Starting InfraWatch services as real processes for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from services import launcher

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_serving(address: str, service: str = "", timeout: float = 30) -> None:
    if not launcher.wait_serving(address, service, timeout):
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


def grpcurl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=timeout, check=False)


def readme_recipe(name: str) -> str:
    """The shell block between `<!-- recipes:NAME -->` and its closing fence in README.md."""
    text = (REPO / "README.md").read_text()
    block = re.search(rf"<!-- recipes:{name} -->\s*```bash\n(.*?)```", text, re.S)
    assert block, f"README has no recipes:{name} block"
    return block.group(1)


def run_readme_recipe(name: str, addresses: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a README recipe block as written, with only its documented addresses replaced by test ports."""
    script = readme_recipe(name)
    for documented, actual in addresses.items():
        script = script.replace(documented, actual)
    env = {**os.environ, "PATH": f"{Path(GRPCURL).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
