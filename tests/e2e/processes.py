"""Starting InfraWatch services as real processes for end-to-end tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from services.processes import REPO, ServiceProcess, free_port, wait_serving

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
__all__ = [
    "REPO",
    "ServiceProcess",
    "free_port",
    "grpcurl",
    "readme_recipe",
    "run_readme_recipe",
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
