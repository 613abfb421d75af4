"""Issue 15 with clients nobody here wrote: Prometheus' own `promtool check metrics` lints every
process's /metrics, and the real agent scrapes Debian's real node_exporter into the platform.

Debian's `prometheus` and `prometheus-node-exporter` packages provide the binaries (.ci/run
installs them); without them these tests skip on a laptop and fail in CI."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

from tests.e2e.conftest import binary
from tests.e2e.processes import ServiceProcess
from tests.e2e.test_agent_faults import HOST, start_agent, stored


def exposition(port: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def test_promtool_finds_nothing_to_lint_in_the_services_own_metrics(agents_process, metrics_process, platform_env):
    promtool = binary("promtool")
    for service in ("AGENTS", "METRICS"):
        text = exposition(platform_env[f"INFRAWATCH_{service}_TELEMETRY_PORT"])
        assert "infrawatch_grpc_server_handled_total" in text or service == "AGENTS"
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
        )
        assert checked.returncode == 0, f"{service}: {checked.stdout}{checked.stderr}"


def test_the_agent_scrapes_a_real_node_exporter_with_prometheus_labels(
    agents_process, metrics_process, platform_env, node_exporter: str, tmp_path: Path
):
    env = {**platform_env, "INFRAWATCH_AGENT_SCRAPE": f"node={node_exporter}", "INFRAWATCH_AGENT_SCRAPE_INTERVAL": "1s"}
    agent: ServiceProcess = start_agent(env, tmp_path, 1)
    instance = node_exporter.split("/")[2]
    try:
        deadline = time.monotonic() + 40
        while True:
            now = int(time.time() * 1000)
            found = stored(metrics_process[1], now - 120_000, now)
            names = {name for (name, labels) in found if dict(labels).get("job") == "node"}
            if {"up", "node_load1", "node_cpu_seconds_total"} <= names:
                break
            assert time.monotonic() < deadline, f"no node_exporter series: {sorted(names)[:20]}\n{agent.log()[-3000:]}"
            time.sleep(0.5)
        # The agent's own node_load1 (its node collectors) carries no job; the scraped one does.
        load = [labels for (name, labels) in found if name == "node_load1" and dict(labels).get("job") == "node"]
        assert dict(load[0]) == {"job": "node", "instance": instance, "host": HOST}
        up = [points for (name, labels), points in found.items() if name == "up" and dict(labels)["job"] == "node"]
        assert up[0][-1][1] == 1.0
        cpu = [dict(labels) for (name, labels) in found if name == "node_cpu_seconds_total" and "job" in dict(labels)]
        assert {"cpu", "mode", "job", "instance", "host"} <= set(cpu[0])
    finally:
        agent.kill()


def test_agent_once_checks_a_scrape_target_before_it_is_deployed(node_exporter: str):
    import sys

    from tests.e2e.processes import REPO

    ran = subprocess.run(
        [sys.executable, "-m", "agent", "--once", "--scrape", f"node={node_exporter}"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    instance = node_exporter.split("/")[2]
    assert f'up{{instance="{instance}",job="node"}} 1.0' in ran.stdout
    assert f'node_load1{{instance="{instance}",job="node"}}' in ran.stdout
    assert "cpu_usage_percent{" in ran.stdout  # the host round is still printed first
