"""`make run`: start the whole platform locally as separate processes, keep it up, stop it cleanly.

Each service runs as its own process, exactly as in production; this module starts them in
dependency order and prints where they listen. Once the platform is up, a part that exits is
restarted with backoff (1 s, 2 s, 4 s ... 30 s; afresh once it has run a minute), told in the log
and in the launcher's own telemetry (`infrawatch_launcher_restarts_total{component}`,
`infrawatch_launcher_component_up{component}`): a monitoring platform outlives its parts. Only
Ctrl-C or SIGTERM stops it: each part gets SIGTERM and time to drain. A part that cannot start
at all stops the start-up, naming it (a taken port, a bad setting: restarting would not help).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.telemetry import new_registry, serve_telemetry, telemetry_port
from agent.tls import ClientTLS
from services.common.config import TELEMETRY_PORTS


@dataclass(frozen=True)
class Component:
    name: str
    module: str
    port_var: str | None
    default_port: int | None
    health_service: str | None


HTTP_HEALTH = "http:/healthz"
"""A component answering HTTP (the console) is ready when this path answers 200."""

COMPONENTS: tuple[Component, ...] = (
    Component("agents", "services.agents", "INFRAWATCH_AGENTS_PORT", 50051, "infrawatch.agents.v1.AgentService"),
    Component("metrics", "services.metrics", "INFRAWATCH_METRICS_PORT", 50052, "infrawatch.metrics.v1.MetricsService"),
    Component("alerts", "services.alerts", "INFRAWATCH_ALERTS_PORT", 50053, "infrawatch.alerts.v1.AlertService"),
    Component("gateway", "services.gateway", "INFRAWATCH_GATEWAY_PORT", 50050, "infrawatch.gateway.v1.OperatorService"),
    Component("console", "services.console", "INFRAWATCH_CONSOLE_PORT", 8080, HTTP_HEALTH),
    Component("agent", "agent", None, None, None),
)
# The secrets a local platform needs, each generated once into a file of the data directory
# (unless set in the environment), so that `make run` works without any setup.
SECRETS = {
    "INFRAWATCH_OPERATOR_TOKEN": "operator-token",
    "INFRAWATCH_ENROLLMENT_TOKEN": "enrollment-token",
    "INFRAWATCH_SERVICE_TOKEN": "service-token",
}


def platform_scrape_targets(environ: dict[str, str]) -> str:
    """job=url pairs for every service's /metrics endpoint that is not switched off."""
    targets = []
    for service, default in TELEMETRY_PORTS.items():
        port = environ.get(f"INFRAWATCH_{service.upper()}_TELEMETRY_PORT", str(default)).strip()
        if port.isdigit() and port != "0":
            targets.append(f"infrawatch-{service}=http://127.0.0.1:{port}/metrics")
    return ",".join(targets)


def local_secret(environ: dict[str, str], var: str) -> str:
    """The configured secret, or one generated once and kept (mode 0600) in the data directory."""
    configured = environ.get(var, "")
    if configured:
        return configured
    path = Path(environ.get("INFRAWATCH_DATA_DIR", "./data")) / SECRETS[var]
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def wait_serving(
    address: str,
    service: str,
    timeout_s: float,
    still_running: Callable[[], bool] = lambda: True,
    tls: ClientTLS | None = None,
) -> bool:
    """Whether `service` at `address` reports SERVING within the timeout; False at once when
    `still_running` says the process serving it has gone."""
    deadline = time.monotonic() + timeout_s
    with (tls or ClientTLS()).channel(address) as channel:
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


def wait_http(address: str, path: str, timeout_s: float, still_running: Callable[[], bool] = lambda: True) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and still_running():
        try:
            with urllib.request.urlopen(f"http://{address}{path}", timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def _running(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is None


RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
"""Waits before restarting a part that exited, one more step for each exit in a row."""
STABLE_AFTER_S = 60.0
"""A part that ran this long before exiting starts its backoff afresh."""


@dataclass
class Child:
    """A started part and what its supervision knows of it."""

    component: Component
    process: subprocess.Popen[bytes]
    started_at: float
    restarts: int = 0
    exits_in_a_row: int = 0
    restart_at: float | None = None
    """When an exited part is due to start again (None while it runs)."""


class Supervision:
    """Restarts parts that exit, with backoff, and counts it (log and telemetry)."""

    def __init__(
        self, spawn: Callable[[Component], subprocess.Popen[bytes]], registry: CollectorRegistry | None = None
    ) -> None:
        self._spawn = spawn
        self.children: list[Child] = []
        self._restarts = Counter(
            "infrawatch_launcher_restarts", "Parts restarted after they exited.", ["component"], registry=registry
        )
        self._up = Gauge(
            "infrawatch_launcher_component_up", "1 while the part runs, 0 while it waits to restart.",
            ["component"], registry=registry,
        )  # fmt: skip

    def start(self, component: Component, now: float) -> Child:
        child = Child(component, self._spawn(component), now)
        self.children.append(child)
        self._restarts.labels(component.name)
        self._up.labels(component.name).set(1)
        return child

    def tick(self, now: float) -> None:
        """Notice exits and restart what is due."""
        for child in self.children:
            name = child.component.name
            if child.restart_at is None and child.process.poll() is not None:
                child.exits_in_a_row = 1 if now - child.started_at >= STABLE_AFTER_S else child.exits_in_a_row + 1
                delay = RESTART_BACKOFF_S[min(child.exits_in_a_row, len(RESTART_BACKOFF_S)) - 1]
                child.restart_at = now + delay
                self._up.labels(name).set(0)
                print(
                    f"launcher: {name} exited with {child.process.returncode}; restarting it in {delay:g}s "
                    f"({child.exits_in_a_row} exit(s) in a row); the rest keeps running",
                    file=sys.stderr,
                    flush=True,
                )
            elif child.restart_at is not None and now >= child.restart_at:
                child.process = self._spawn(child.component)
                child.started_at, child.restart_at = now, None
                child.restarts += 1
                self._restarts.labels(name).inc()
                self._up.labels(name).set(1)
                print(f"launcher: {name} restarted (pid {child.process.pid}, restart {child.restarts})", flush=True)

    def processes(self) -> list[tuple[Component, subprocess.Popen[bytes]]]:
        return [(child.component, child.process) for child in self.children]


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
    parser.epilog = (
        "Once everything is up, a part that exits is restarted with backoff (1 s doubling to 30 s), "
        "logged and counted at the launcher's own /metrics (INFRAWATCH_LAUNCHER_TELEMETRY_PORT, "
        f"default {TELEMETRY_PORTS['launcher']}; `off` for none). Ctrl-C or SIGTERM stops everything."
    )
    args = parser.parse_args(argv)

    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    environ = os.environ.copy()
    for var in SECRETS:
        environ[var] = local_secret(environ, var)
    environ.setdefault("INFRAWATCH_AGENT_ENROLLMENT_TOKEN", environ["INFRAWATCH_ENROLLMENT_TOKEN"])
    # A local platform listens on this machine only (no plaintext tokens on the network);
    # set INFRAWATCH_BIND_HOST (with TLS) to let other hosts' agents in.
    environ.setdefault("INFRAWATCH_BIND_HOST", "127.0.0.1")
    tls = ClientTLS(
        ca_file=environ.get("INFRAWATCH_TLS_CA", ""),
        cert_file=environ.get("INFRAWATCH_TLS_CLIENT_CERT", "") or environ.get("INFRAWATCH_TLS_CERT", ""),
        key_file=environ.get("INFRAWATCH_TLS_CLIENT_KEY", "") or environ.get("INFRAWATCH_TLS_KEY", ""),
        server_name=environ.get("INFRAWATCH_TLS_SERVER_NAME", ""),
    )
    data_dir = environ.get("INFRAWATCH_DATA_DIR", "./data")
    # The services find each other on the ports they were given here (INFRAWATCH_AGENTS_PORT=6000
    # make run just works), unless an address is set explicitly.
    for component in COMPONENTS:
        if component.port_var and component.name != "console":
            given = environ.get(component.port_var, str(component.default_port))
            environ.setdefault(f"INFRAWATCH_{component.name.upper()}_ADDRESS", f"localhost:{given}")
    # The local agent monitors this machine and reports to the services started here.
    environ.setdefault("INFRAWATCH_AGENT_AGENTS_ADDRESS", f"localhost:{environ.get('INFRAWATCH_AGENTS_PORT', '50051')}")
    environ.setdefault(
        "INFRAWATCH_AGENT_METRICS_ADDRESS", f"localhost:{environ.get('INFRAWATCH_METRICS_PORT', '50052')}"
    )
    environ.setdefault("INFRAWATCH_AGENT_STATE_DIR", str(Path(data_dir) / "agent"))
    # ... and scrapes the platform's own telemetry, so InfraWatch's health is stored, queried,
    # charted and alerted on through its own pipeline, like any host's.
    environ.setdefault("INFRAWATCH_AGENT_SCRAPE", platform_scrape_targets(environ))

    def spawn(component: Component) -> subprocess.Popen[bytes]:
        # The children ignore the terminal's Ctrl-C so that shutdown happens in order, from here.
        return subprocess.Popen([sys.executable, "-m", component.module], env=environ, start_new_session=True)

    registry = new_registry()
    supervision = Supervision(spawn, registry)
    endpoint = None
    try:
        port_setting = environ.get("INFRAWATCH_LAUNCHER_TELEMETRY_PORT", str(TELEMETRY_PORTS["launcher"]))
        try:
            endpoint = serve_telemetry(registry, "127.0.0.1", telemetry_port(port_setting), "launcher")
        except ValueError as error:
            print(f"launcher: INFRAWATCH_LAUNCHER_TELEMETRY_PORT {error}", file=sys.stderr)
            return 2
        except OSError as error:
            print(
                f"launcher: telemetry port {port_setting} is not available ({error.strerror}); "
                "running without it (set INFRAWATCH_LAUNCHER_TELEMETRY_PORT)",
                file=sys.stderr,
            )
        for component in COMPONENTS:
            process = supervision.start(component, time.monotonic()).process
            if component.port_var and component.health_service:
                port = int(environ.get(component.port_var, component.default_port or 0))
                address = f"localhost:{port}"
                if component.health_service == HTTP_HEALTH:
                    ready = wait_http(address, "/healthz", args.ready_timeout, partial(_running, process))
                else:
                    ready = wait_serving(
                        address, component.health_service, args.ready_timeout, partial(_running, process), tls
                    )
                if not ready:
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
                shown = f"http://{address}/" if component.health_service == HTTP_HEALTH else address
                print(f"launcher: {component.name:<8} ready on {shown}", flush=True)
            else:
                print(f"launcher: {component.name:<8} started (monitoring this host)", flush=True)
        store = "PostgreSQL" if environ.get("INFRAWATCH_DATABASE_URL") else f"SQLite files in {data_dir}"
        print(f"launcher: store: {store}", flush=True)
        prom_port = environ.get("INFRAWATCH_PROM_PORT", "9201").strip()
        if prom_port.isdigit():
            print(
                f"launcher: Prometheus side on http://localhost:{prom_port}/ (remote-write: /api/v1/write; "
                "Grafana's Prometheus data source and promtool use this URL)",
                flush=True,
            )
        for var, filename in SECRETS.items():
            if not os.environ.get(var):
                print(
                    f"launcher: {var.removeprefix('INFRAWATCH_').lower().replace('_', ' ')}: in "
                    f"{Path(data_dir) / filename}",
                    flush=True,
                )
        print("launcher: InfraWatch is running; operators use the gateway; press Ctrl-C to stop", flush=True)
        while not stopping:
            supervision.tick(time.monotonic())
            time.sleep(0.5)
        return 0
    finally:
        print("launcher: stopping", flush=True)
        _stop_all(supervision.processes(), grace=20)
        if endpoint is not None:
            endpoint.close()


if __name__ == "__main__":
    sys.exit(main())
