"""The real agent against real services, through a crash of the metrics service and an agent
restart: every sample the agent collected is stored exactly once, with its exact value."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import grpc

from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2, metrics_pb2_grpc
from tests.e2e.conftest import METRICS_SERVICE, start
from tests.e2e.processes import ServiceProcess

HOST = "fault-host"
Key = tuple[str, tuple[tuple[str, str], ...]]


def start_agent(env: dict[str, str], tmp_path: Path, run: int) -> ServiceProcess:
    agent_env = {
        **env,
        "INFRAWATCH_AGENT_AGENTS_ADDRESS": env["INFRAWATCH_AGENTS_ADDRESS"],
        "INFRAWATCH_AGENT_METRICS_ADDRESS": env["INFRAWATCH_METRICS_ADDRESS"],
        "INFRAWATCH_AGENT_INTERVAL": "300ms",
        "INFRAWATCH_AGENT_HOSTNAME": HOST,
        "INFRAWATCH_AGENT_STATE_DIR": str(tmp_path / "agent-state"),
        "INFRAWATCH_AGENT_GRACE": "2s",
    }
    return ServiceProcess(
        "agent", agent_env, tmp_path / f"agent-{run}.log", args=["--journal", str(tmp_path / "journal.jsonl")]
    )


def journal(tmp_path: Path) -> dict[Key, dict[int, float]]:
    collected: dict[Key, dict[int, float]] = defaultdict(dict)
    path = tmp_path / "journal.jsonl"
    if not path.exists():
        return collected
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        for name, labels, value in entry["samples"]:
            collected[(name, tuple(sorted(labels.items())))][entry["t"]] = value
    return collected


def rounds(tmp_path: Path) -> int:
    path = tmp_path / "journal.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for_rounds(tmp_path: Path, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while rounds(tmp_path) < count:
        assert time.monotonic() < deadline, f"the agent collected only {rounds(tmp_path)} rounds"
        time.sleep(0.1)


def stored(metrics_address: str, start_ms: int, end_ms: int) -> dict[Key, list[tuple[int, float]]]:
    with grpc.insecure_channel(metrics_address) as channel:
        request = metrics_pb2.QueryRangeRequest(selector=metrics_pb2.Selector(selector=f'{{host="{HOST}"}}'))
        request.start.FromMilliseconds(start_ms)
        request.end.FromMilliseconds(end_ms)
        reply = metrics_pb2_grpc.MetricsServiceStub(channel).QueryRange(request, timeout=30)
    found = {}
    for series in reply.series:
        labels = {label.name: label.value for label in series.labels}
        name = labels.pop("__name__")
        found[(name, tuple(sorted(labels.items())))] = list(zip(series.timestamps_ms, series.values, strict=True))
    return found


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_no_sample_is_lost_or_duplicated_across_a_metrics_crash_and_an_agent_restart(
    platform_env, agents_process, metrics_process, tmp_path: Path
):
    metrics, metrics_address = metrics_process
    agent = start_agent(platform_env, tmp_path, 1)
    try:
        wait_for_rounds(tmp_path, 5)
        metrics.process.kill()  # kill -9, mid-stream
        metrics.process.wait()
        wait_for_rounds(tmp_path, rounds(tmp_path) + 4)  # collected while nobody can store them

        # The agent restarts while the metrics service is still down: what it could not send
        # within its grace period stays in its on-disk buffer for the next run.
        assert agent.terminate(timeout=30) == 0
        kept = re.search(r"unsent_batches_kept_for_next_run=(\d+)", agent.log())
        assert kept and int(kept.group(1)) > 0, agent.log()
        agent = start_agent(platform_env, tmp_path, 2)
        wait_for_rounds(tmp_path, rounds(tmp_path) + 3)
        assert "resuming with unsent batches" in agent.log()

        metrics, _ = start(
            "services.metrics",
            platform_env,
            "INFRAWATCH_METRICS_PORT",
            METRICS_SERVICE,
            tmp_path / "metrics-restarted.log",
        )
        deadline = time.monotonic() + 45  # the agent's reconnect backoff is capped at 30s
        while "streaming metrics" not in agent.log():
            assert time.monotonic() < deadline, "the agent never reconnected:\n" + agent.log()
            time.sleep(0.2)
        wait_for_rounds(tmp_path, rounds(tmp_path) + 3)
        assert agent.terminate(timeout=30) == 0
        assert "unsent_batches_kept_for_next_run=0" in agent.log(), agent.log()

        collected = journal(tmp_path)
        first = min(t for samples in collected.values() for t in samples)
        last = max(t for samples in collected.values() for t in samples)
        found = stored(metrics_address, first, last)
        assert set(found) == set(collected)
        missing, duplicated, wrong = 0, 0, 0
        for key, expected in collected.items():
            times = [t for t, _ in found[key]]
            duplicated += len(times) - len(set(times))
            got = dict(found[key])
            missing += len(set(expected) - set(got))
            wrong += sum(1 for t, v in expected.items() if t in got and not same(got[t], v))
        total = sum(len(samples) for samples in collected.values())
        assert (missing, duplicated, wrong) == (0, 0, 0), f"of {total} collected samples"
        assert sum(len(samples) for samples in found.values()) == total
    finally:
        agent.kill()
        metrics.kill()

    with grpc.insecure_channel(agents_process[1]) as channel:
        listed = agents_pb2_grpc.AgentServiceStub(channel).ListAgents(agents_pb2.ListAgentsRequest(), timeout=10)
    assert [a.hostname for a in listed.agents] == [HOST]
    state = json.loads((tmp_path / "agent-state" / "state.json").read_text())
    assert state["agent_id"] == listed.agents[0].agent_id


def test_the_load_generator_simulates_a_fleet_that_the_platform_fully_acknowledges(
    platform_env, agents_process, metrics_process, tmp_path
):
    result = subprocess.run(
        [sys.executable, "-m", "agent.loadgen", "--agents-address", agents_process[1],
         "--metrics-address", metrics_process[1], "--agents", "5", "--series", "20",
         "--interval", "200ms", "--duration", "2s", "--state-dir", str(tmp_path / "loadgen"),
         "--enrollment-token", platform_env["INFRAWATCH_ENROLLMENT_TOKEN"]],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["stream_errors"] == 0 and report["rejected_samples"] == 0
    assert report["acked_samples"] >= 5 * 20 * 5
    with grpc.insecure_channel(agents_process[1]) as channel:
        listed = agents_pb2_grpc.AgentServiceStub(channel).ListAgents(
            agents_pb2.ListAgentsRequest(label_selector={"loadgen": "true"}), timeout=10
        )
    assert len(listed.agents) == 5


def test_the_agent_reports_its_stream_and_buffer_in_its_own_telemetry(
    agents_process, metrics_process, platform_env, tmp_path: Path
):
    """Issue 15: buffer depth and the oldest unsent batch's age, read by Prometheus' own parser,
    while the stream is up and after the metrics service went away."""
    from tests.e2e.test_metrics_process import scrape

    port = platform_env["INFRAWATCH_AGENT_TELEMETRY_ADDRESS"].rsplit(":", 1)[1]
    agent = start_agent(platform_env, tmp_path, 1)
    try:
        wait_for_rounds(tmp_path, 3)
        deadline = time.monotonic() + 30
        while (up := scrape(port)).get(("infrawatch_agent_acknowledged_batches_total", ()), 0) < 2:
            assert time.monotonic() < deadline, up
            time.sleep(0.2)
        assert up[("infrawatch_agent_streaming", ())] == 1
        assert up[("infrawatch_agent_collection_rounds_total", ())] >= 3
        assert up[("infrawatch_agent_buffer_oldest_unsent_age_seconds", ())] < 5
        assert ("process_resident_memory_bytes", ()) in up

        metrics_process[0].kill()
        wait_for_rounds(tmp_path, rounds(tmp_path) + 8)
        down = scrape(port)
        assert down[("infrawatch_agent_streaming", ())] == 0
        assert down[("infrawatch_agent_buffer_batches", ())] >= 5
        assert down[("infrawatch_agent_buffer_oldest_unsent_age_seconds", ())] >= 1.0
    finally:
        agent.kill()


def test_the_agent_scrapes_prometheus_endpoints_into_the_platform(
    agents_process, metrics_process, platform_env, tmp_path: Path
):
    """Issue 15: the real agent scrapes the metrics service's own /metrics (prometheus_client's
    exposition) and a target that is down; the series arrive through the stream with job, instance
    and the agent's host, and `up` tells the two apart."""
    from tests.e2e.processes import free_port

    own = f"http://127.0.0.1:{platform_env['INFRAWATCH_METRICS_TELEMETRY_PORT']}/metrics"
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    env = {
        **platform_env,
        "INFRAWATCH_AGENT_SCRAPE": f"platform={own},gone={dead}",
        "INFRAWATCH_AGENT_SCRAPE_INTERVAL": "500ms",
    }
    agent = start_agent(env, tmp_path, 1)
    try:
        metrics = metrics_process[1]
        deadline = time.monotonic() + 30
        while True:
            now = int(time.time() * 1000)
            up = stored(metrics, now - 60_000, now)
            ups = {dict(labels).get("job"): points for (name, labels), points in up.items() if name == "up"}
            if {"platform", "gone"} <= set(ups):
                break
            assert time.monotonic() < deadline, f"no `up` series arrived; the agent said:\n{agent.log()}"
            time.sleep(0.5)
        assert ups["platform"][-1][1] == 1.0 and ups["gone"][-1][1] == 0.0
        handled = [labels for (name, labels), _ in up.items() if name == "infrawatch_grpc_server_handled_total"]
        assert handled, sorted({name for name, _ in up})
        labels = dict(handled[0])
        assert labels["job"] == "platform" and labels["instance"] == own.split("/")[2]
        assert "grpc_method" in labels  # HOST is the agent's own: stored() selects on it
        assert "scrape target down" in agent.log() and "gone" in agent.log()
    finally:
        agent.kill()
