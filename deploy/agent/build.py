"""Build the agent's own wheel: `python deploy/agent/build.py [OUT_DIR]` (what `make agent-dist` runs).

setuptools packages only what lies under the project directory, so the agent package and the
contracts are staged next to deploy/agent/pyproject.toml in a temporary directory first.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="infrawatch-agent-") as staging:
        stage = Path(staging)
        shutil.copy(REPO / "deploy" / "agent" / "pyproject.toml", stage / "pyproject.toml")
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(REPO / "agent", stage / "agent", ignore=ignore)
        shutil.copytree(REPO / "protos" / "infrawatch", stage / "infrawatch", ignore=ignore)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "-w",
                str(out_dir),
                str(stage),
            ],
            check=True,
        )
    (wheel,) = sorted(out_dir.glob("infrawatch_agent-*.whl"))[-1:]
    return wheel


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "dist"))
