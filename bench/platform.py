"""The services a benchmark runs against: agents and metrics as real processes, on a fresh
PostgreSQL schema or a fresh SQLite directory, torn down afterwards."""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import psycopg2

from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from services.common.db import with_driver
from services.processes import ServiceProcess, free_port, wait_serving


@dataclass
class Platform:
    agents_address: str
    metrics_address: str
    metrics: ServiceProcess
    workdir: Path
    schema: str
    env: dict[str, str]

    def restart_metrics(self, extra_env: dict[str, str]) -> None:
        """Stop the metrics service and start it again with `extra_env` on top of its environment."""
        self.metrics.terminate()
        self.metrics = ServiceProcess("services.metrics", {**self.env, **extra_env}, self.workdir / "metrics-2.log")
        wait_serving(self.metrics_address, "infrawatch.metrics.v1.MetricsService")


ENROLLMENT_TOKEN = "bench-enrollment-token"
ENROLL = (("authorization", f"Bearer {ENROLLMENT_TOKEN}"),)
"""Metadata of a benchmark's simulated hosts registering."""


def loader_token(platform: Platform, hostname: str = "bench-loader") -> str:
    """Registers one host whose stream loads a benchmark's workload; returns its agent token."""
    with grpc.insecure_channel(platform.agents_address) as channel:
        return (
            agents_pb2_grpc.AgentServiceStub(channel)
            .RegisterAgent(agents_pb2.RegisterAgentRequest(hostname=hostname), timeout=10, metadata=ENROLL)
            .agent_token
        )


@contextmanager
def running_platform(
    backend: str, postgres_url: str, env: dict[str, str] | None = None, keep_schema: bool = False
) -> Iterator[Platform]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="infrawatch-bench-"))
    admin = None
    database_url = ""
    if backend == "postgres":
        admin = psycopg2.connect(postgres_url)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {schema}")
        database_url = f"{with_driver(postgres_url)}?options=-csearch_path%3D{schema}"
    agents_port, metrics_port = free_port(), free_port()
    common = {
        "INFRAWATCH_DATABASE_URL": database_url,
        "INFRAWATCH_DATA_DIR": str(workdir),
        "INFRAWATCH_AGENTS_PORT": str(agents_port),
        "INFRAWATCH_METRICS_PORT": str(metrics_port),
        # Telemetry on, as deployed, on ports of this run's own.
        "INFRAWATCH_AGENTS_TELEMETRY_PORT": str(free_port()),
        "INFRAWATCH_METRICS_TELEMETRY_PORT": str(free_port()),
        "INFRAWATCH_PROM_PORT": str(free_port()),
        "INFRAWATCH_AGENTS_ADDRESS": f"127.0.0.1:{agents_port}",
        "INFRAWATCH_LOG_LEVEL": "WARNING",
        "INFRAWATCH_SERVICE_TOKEN": "bench-service-token",
        "INFRAWATCH_ENROLLMENT_TOKEN": ENROLLMENT_TOKEN,
        **(env or {}),
    }
    agents = ServiceProcess("services.agents", common, workdir / "agents.log")
    platform = Platform(
        f"127.0.0.1:{agents_port}",
        f"127.0.0.1:{metrics_port}",
        ServiceProcess("services.metrics", common, workdir / "metrics.log"),
        workdir,
        schema,
        common,
    )
    try:
        wait_serving(platform.agents_address, "infrawatch.agents.v1.AgentService")
        wait_serving(platform.metrics_address, "infrawatch.metrics.v1.MetricsService")
        yield platform
    finally:
        platform.metrics.terminate()
        agents.terminate()
        if admin is not None:
            if not keep_schema:
                with admin.cursor() as cursor:
                    cursor.execute(f"DROP SCHEMA {schema} CASCADE")
            admin.close()


def postgres_cpu_s() -> float:
    """CPU seconds used so far by every PostgreSQL server process on this machine."""
    total = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        if process.info["name"] in ("postgres", "postmaster") and process.info["cpu_times"]:
            total += process.info["cpu_times"].user + process.info["cpu_times"].system
    return total


def add_platform_options(parser: argparse.ArgumentParser, output: str) -> None:
    """The options every benchmark takes: the store, the PostgreSQL to use, where the JSON goes."""
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("INFRAWATCH_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--output", default=output)


def report(result: dict[str, object], output: str) -> None:
    """Print the result as JSON, with the machine's load at the end, and write it to `output`."""
    text = json.dumps({**result, "load_average_1m": round(os.getloadavg()[0], 2)}, indent=2)
    print(text)
    Path(output).write_text(text + "\n")


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile (NaN for no samples)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]
