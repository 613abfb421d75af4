"""`make run`: start the whole platform locally as separate processes and stop it cleanly.

Each service runs as its own process, exactly as in production; this module
only starts them in dependency order, prints where they listen, and on Ctrl-C
or SIGTERM forwards SIGTERM to each one and waits for it to drain.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass(frozen=True)
class Component:
    name: str
    module: str
    port_var: str | None
    default_port: int | None
    health_service: str | None


COMPONENTS: tuple[Component, ...] = (
    Component("agents", "services.agents", "INFRAWATCH_AGENTS_PORT", 50051, "infrawatch.agents.v1.AgentService"),
    Component("metrics", "services.metrics", "INFRAWATCH_METRICS_PORT", 50052, "infrawatch.metrics.v1.MetricsService"),
    Component("gateway", "services.gateway", "INFRAWATCH_GATEWAY_PORT", 50050, "infrawatch.gateway.v1.OperatorService"),
    Component("agent", "agent", None, None, None),
)
OPERATOR_TOKEN_FILE = "operator-token"


def operator_token(environ: dict[str, str]) -> str:
    """The configured operator token, or one generated once and kept in the data directory, so a
    local platform has operator actions enabled without any setup."""
    configured = environ.get("INFRAWATCH_OPERATOR_TOKEN", "")
    if configured:
        return configured
    path = Path(environ.get("INFRAWATCH_DATA_DIR", "./data")) / OPERATOR_TOKEN_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def wait_serving(
    address: str, service: str, timeout_s: float, still_running: Callable[[], bool] = lambda: True
) -> bool:
    """Whether `service` at `address` reports SERVING within the timeout; False at once when
    `still_running` says the process serving it has gone."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and still_running():
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    return False


def _running(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is None


def _stop_all(processes: list[tuple[Component, subprocess.Popen[bytes]]], grace: float) -> None:
    for _, process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for component, process in reversed(processes):
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"launcher: {component.name} did not stop in {grace:.0f}s; killing it", file=sys.stderr)
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.launcher",
        description="Start every InfraWatch service locally (SQLite under INFRAWATCH_DATA_DIR unless "
        "INFRAWATCH_DATABASE_URL is set) and stop them all on Ctrl-C. Each service's own --help "
        "lists its settings.",
    )
    parser.add_argument("--ready-timeout", type=float, default=60, help="seconds to wait for health")
    args = parser.parse_args(argv)

    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    environ = os.environ.copy()
    environ["INFRAWATCH_OPERATOR_TOKEN"] = operator_token(environ)
    data_dir = environ.get("INFRAWATCH_DATA_DIR", "./data")
    # The local agent monitors this machine and reports to the services started here.
    environ.setdefault("INFRAWATCH_AGENT_AGENTS_ADDRESS", f"localhost:{environ.get('INFRAWATCH_AGENTS_PORT', '50051')}")
    environ.setdefault(
        "INFRAWATCH_AGENT_METRICS_ADDRESS", f"localhost:{environ.get('INFRAWATCH_METRICS_PORT', '50052')}"
    )
    environ.setdefault("INFRAWATCH_AGENT_STATE_DIR", str(Path(data_dir) / "agent"))
    processes: list[tuple[Component, subprocess.Popen[bytes]]] = []
    try:
        for component in COMPONENTS:
            # The children ignore the terminal's Ctrl-C so that shutdown happens in order, from here.
            process = subprocess.Popen(
                [sys.executable, "-m", component.module],
                env=environ,
                start_new_session=True,
            )
            processes.append((component, process))
            if component.port_var and component.health_service:
                port = int(environ.get(component.port_var, component.default_port or 0))
                address = f"localhost:{port}"
                if not wait_serving(address, component.health_service, args.ready_timeout, partial(_running, process)):
                    if process.poll() is not None:
                        print(
                            f"launcher: {component.name} exited with code {process.returncode} while starting "
                            f"(its error is above; is {address} already in use?); stopping",
                            file=sys.stderr,
                        )
                    else:
                        print(
                            f"launcher: {component.name} did not become healthy on {address} within "
                            f"{args.ready_timeout:g}s; stopping",
                            file=sys.stderr,
                        )
                    return 1
                print(f"launcher: {component.name:<8} ready on {address}", flush=True)
            else:
                print(f"launcher: {component.name:<8} started (monitoring this host)", flush=True)
        store = "PostgreSQL" if environ.get("INFRAWATCH_DATABASE_URL") else f"SQLite files in {data_dir}"
        print(f"launcher: store: {store}", flush=True)
        if not os.environ.get("INFRAWATCH_OPERATOR_TOKEN"):
            print(f"launcher: operator token: in {Path(data_dir) / OPERATOR_TOKEN_FILE}", flush=True)
        print("launcher: InfraWatch is running; operators use the gateway; press Ctrl-C to stop", flush=True)
        while not stopping:
            for component, process in processes:
                if process.poll() is not None:
                    print(f"launcher: {component.name} exited with {process.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        print("launcher: stopping", flush=True)
        _stop_all(processes, grace=20)


if __name__ == "__main__":
    sys.exit(main())
