"""Starting InfraWatch services as real processes for end-to-end tests."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from services.processes import REPO, ServiceProcess, free_port, wait_serving

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
__all__ = [
    "REPO",
    "ServiceProcess",
    "free_port",
    "grpcurl",
    "read_until",
    "readme_recipe",
    "run_readme_recipe",
    "telemetry_value",
    "wait_for",
    "wait_serving",
]


def grpcurl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=timeout, check=False)


def wait_for(condition: Callable[[], object], timeout: float = 60, what: str = "condition") -> None:
    """Poll `condition` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met within {timeout}s"
        time.sleep(0.1)


def read_until(process: subprocess.Popen[str], wanted: str, timeout: float = 30, so_far: str = "") -> str:
    """`so_far` plus what `process` writes to stdout until `wanted` is in it; fails naming what
    was read if it does not come within `timeout` seconds, rather than blocking forever. Reads
    the pipe's file descriptor directly (a text wrapper's buffer would hide lines from select), so
    a test reads a process' output through this function only, passing back what it returned."""
    assert process.stdout is not None
    descriptor = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    output = so_far
    while wanted not in output:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([descriptor], [], [], max(0.0, left))
        assert ready and left > 0, f"{wanted!r} did not come within {timeout}s; read: {output[-2000:]!r}"
        chunk = os.read(descriptor, 65536)
        assert chunk, f"the output ended before {wanted!r}; read: {output[-2000:]!r}"
        output += chunk.decode("utf-8", "replace")
    return output


def telemetry_value(port: str, name: str) -> float:
    """The sum of a sample's values on a service's own /metrics page (0 when it is absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        sample.value for family in text_string_to_metric_families(text) for sample in family.samples
        if sample.name == name
    )  # fmt: skip


def readme_recipe(name: str) -> str:
    """The shell block between `<!-- recipes:NAME -->` and its closing fence in README.md."""
    text = (REPO / "README.md").read_text()
    block = re.search(rf"<!-- recipes:{name} -->\s*```bash\n(.*?)```", text, re.S)
    assert block, f"README has no recipes:{name} block"
    return block.group(1)


RECIPE_SECRETS = {"operator-token": "e2e-operator", "enrollment-token": "e2e-enrollment"}


def run_readme_recipe(name: str, addresses: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a README recipe block as written, with only its documented addresses replaced by test ports."""
    script = readme_recipe(name)
    # The secrets `make run` would have generated into data/, as the recipes read them.
    (cwd / "data").mkdir(exist_ok=True)
    for filename, secret in RECIPE_SECRETS.items():
        (cwd / "data" / filename).write_text(secret + "\n")
    for documented, actual in addresses.items():
        script = script.replace(documented, actual)
    env = {**os.environ, "PATH": f"{Path(GRPCURL).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
