"""`make run`'s launcher, as a new user meets it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import TELEMETRY_SERVICES
from tests.e2e.processes import REPO, free_port, wait_serving


def test_a_service_that_cannot_start_is_named_at_once_and_everything_stops(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "INFRAWATCH_DATA_DIR": str(tmp_path),
            "INFRAWATCH_DATABASE_URL": "",
            "INFRAWATCH_AGENTS_PORT": str(free_port()),
            "INFRAWATCH_GATEWAY_PORT": str(free_port()),
            "INFRAWATCH_METRICS_PORT": str(port),
            "INFRAWATCH_LOG_LEVEL": "WARNING",
            **{f"INFRAWATCH_{name}_TELEMETRY_PORT": str(free_port()) for name in TELEMETRY_SERVICES},
            "INFRAWATCH_PROM_PORT": str(free_port()),
            "INFRAWATCH_AGENT_TELEMETRY_ADDRESS": f"127.0.0.1:{free_port()}",
        }
        # A ready timeout far beyond this test's own: only noticing the exit can end the run in time.
        run = subprocess.run(
            [sys.executable, "-m", "services.launcher", "--ready-timeout", "3600"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert run.returncode == 1
    assert "launcher: metrics exited with code" in run.stderr
    assert f"localhost:{port} already in use" in run.stderr


def _launcher_env(tmp_path: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Ports and environment for a whole local platform on free ports (SQLite in tmp_path)."""
    ports = {name: free_port() for name in ("AGENTS", "METRICS", "ALERTS", "GATEWAY", "CONSOLE", "LAUNCHER_TELEMETRY")}
    env = {
        **os.environ,
        "INFRAWATCH_DATA_DIR": str(tmp_path),
        "INFRAWATCH_DATABASE_URL": "",
        **{f"INFRAWATCH_{name}_PORT": str(port) for name, port in ports.items()},
        **{f"INFRAWATCH_{name}_TELEMETRY_PORT": str(free_port()) for name in TELEMETRY_SERVICES},
        "INFRAWATCH_PROM_PORT": str(free_port()),
        "INFRAWATCH_AGENT_TELEMETRY_ADDRESS": f"127.0.0.1:{free_port()}",
        "INFRAWATCH_AGENT_INTERVAL": "1s",
        "INFRAWATCH_LOG_LEVEL": "WARNING",
    }
    env.pop("INFRAWATCH_AGENT_SCRAPE", None)
    return ports, env


def test_make_runs_agent_monitors_the_platform_through_its_own_pipeline(tmp_path: Path):
    """Issue 15: the launcher's agent scrapes every service's /metrics, so `up` and the services'
    own series can be queried like any host's."""
    import signal
    import time

    import grpc

    from infrawatch.metrics.v1 import metrics_pb2, metrics_pb2_grpc

    ports, env = _launcher_env(tmp_path)
    output = (tmp_path / "launcher.log").open("w")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "services.launcher"], cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{ports['METRICS']}") as channel:
            stub = metrics_pb2_grpc.MetricsServiceStub(channel)
            deadline, jobs = time.monotonic() + 90, set()
            wanted = {f"infrawatch-{name}" for name in ("agents", "metrics", "alerts", "gateway", "console")}
            while not wanted <= jobs:
                assert time.monotonic() < deadline, (
                    f"jobs up: {sorted(jobs)}\n{(tmp_path / 'launcher.log').read_text()}"
                )
                time.sleep(1)
                try:
                    reply = stub.LatestValues(
                        metrics_pb2.LatestValuesRequest(selector=metrics_pb2.Selector(selector="up")), timeout=5
                    )
                except grpc.RpcError:
                    continue  # not serving yet
                up = {
                    labels["job"]: sample.value
                    for sample in reply.samples
                    if (labels := {label.name: label.value for label in sample.labels})
                }
                jobs = {job for job, value in up.items() if value == 1.0}
    finally:
        launcher.send_signal(signal.SIGINT)
        try:
            launcher.wait(60)
        except subprocess.TimeoutExpired:
            launcher.kill()
        output.close()


def test_a_part_that_dies_is_restarted_while_the_rest_of_the_platform_stays_up(tmp_path: Path):
    """Issue 26: kill -9 the local agent, then the metrics service; the launcher restarts each
    (logged and counted at its /metrics) and never stops the platform."""
    import signal
    import time
    import urllib.request

    import psutil

    ports, env = _launcher_env(tmp_path)
    log = tmp_path / "launcher.log"
    output = log.open("w")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "services.launcher"], cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
    )

    def child(module: str) -> psutil.Process:
        for process in psutil.Process(launcher.pid).children():
            if process.cmdline()[-2:] == ["-m", module]:
                return process
        raise AssertionError(f"no {module} child\n{log.read_text()}")

    def wait_for(condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert launcher.poll() is None, f"the launcher stopped\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{what}\n{log.read_text()}"
            time.sleep(0.2)

    def restarts(component: str) -> float:
        url = f"http://127.0.0.1:{ports['LAUNCHER_TELEMETRY']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        wanted = f'infrawatch_launcher_restarts_total{{component="{component}"}} '
        return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(wanted))

    try:
        wait_for(lambda: "InfraWatch is running" in log.read_text(), "the platform did not come up", 90)
        gateway = f"127.0.0.1:{ports['GATEWAY']}"
        for module, component in (("agent", "agent"), ("services.metrics", "metrics")):
            victim = child(module)
            victim.kill()
            wait_for(lambda c=component: f"launcher: {c} restarted" in log.read_text(), f"{component} not restarted")
            assert child(module).pid != victim.pid
            assert restarts(component) == 1
            wait_serving(gateway, timeout=30)  # the gateway never went away
        wait_serving(f"127.0.0.1:{ports['METRICS']}", "infrawatch.metrics.v1.MetricsService", timeout=60)
        assert launcher.poll() is None
        assert "stopping" not in log.read_text()
    finally:
        launcher.send_signal(signal.SIGINT)
        try:
            assert launcher.wait(60) == 0
        finally:
            if launcher.poll() is None:
                launcher.kill()
            output.close()
