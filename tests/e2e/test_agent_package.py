"""The agent ships without the server kit: its own wheel holds the agent and the contracts, asks
for grpcio, prometheus_client, protobuf and psutil only, and runs with the server's libraries out
of reach."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.e2e.processes import REPO

# Run from outside the repository with the server's libraries (and the services) unimportable.
BOOTSTRAP = """
import importlib.abc, runpy, sys
FORBIDDEN = {"services", "sqlalchemy", "alembic", "psycopg2", "numpy", "re2", "mako"}
class Forbid(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"the agent imported {name}, which is not part of its distribution")
        return None
sys.meta_path.insert(0, Forbid())
sys.path.insert(0, sys.argv[1])
import agent
assert agent.__file__.startswith(sys.argv[1]), agent.__file__
sys.argv = ["infrawatch-agent", *sys.argv[2:]]
runpy.run_module("agent", run_name="__main__")
"""


def test_the_agent_wheel_needs_and_imports_nothing_of_the_server(tmp_path: Path):
    built = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "agent" / "build.py"), str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    wheel = Path(built.stdout.strip().splitlines()[-1])
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert not any(name.startswith("services/") for name in names)
    assert {"agent/__main__.py", "infrawatch/metrics/v1/metrics_pb2_grpc.py"} <= set(names)
    requires = sorted(line.split(":", 1)[1].strip().split("<")[0].split(">")[0] for line in metadata.splitlines()
                      if line.startswith("Requires-Dist:"))  # fmt: skip
    assert requires == ["grpcio", "prometheus_client", "protobuf", "psutil"]

    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    for args, expected in ((["--once"], "cpu_usage_percent{"), (["--help"], "--enrollment-token")):
        ran = subprocess.run(
            [sys.executable, "-c", BOOTSTRAP, str(target), *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert expected in ran.stdout
