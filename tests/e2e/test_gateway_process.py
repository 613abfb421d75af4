"""All three services as real processes; every gateway RPC driven by grpcurl through reflection."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from tests.e2e.processes import GRPCURL, grpcurl, read_until, run_readme_recipe, telemetry_value, wait_for
from tests.e2e.test_metrics_process import register, stream

OPERATOR = "infrawatch.gateway.v1.OperatorService"


def gateway(address: str, method: str, body: dict, *headers: str) -> subprocess.CompletedProcess[str]:
    flags = [item for header in headers for item in ("-H", header)]
    return grpcurl("-plaintext", *flags, "-d", json.dumps(body), address, f"{OPERATOR}/{method}")


def ok(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def cpu_batch(hostname: str, times: list[int], values: list[float]) -> dict:
    labels = [{"name": "__name__", "value": "cpu_usage_percent"}, {"name": "host", "value": hostname}]
    return {"sequence": 1, "series": [{"labels": labels, "timestamps_ms": times, "values": values}]}


def test_readme_gateway_recipes_work_verbatim(agents_process, metrics_process, gateway_process, tmp_path: Path):
    addresses = {
        "localhost:50050": gateway_process[1],
        "localhost:50051": agents_process[1],
        "localhost:50052": metrics_process[1],
    }
    fed = run_readme_recipe("metrics", addresses, tmp_path)
    assert fed.returncode == 0, fed.stderr
    result = run_readme_recipe("gateway", addresses, tmp_path)
    assert result.returncode == 0, result.stderr
    assert OPERATOR in result.stdout
    assert '"hostname": "db-1"' in result.stdout
    assert "AGENT_STATUS_DEREGISTERED" in result.stdout
    assert '"registration_approved": true' in result.stdout
    assert '"status": "SERVING"' in result.stdout


def test_which_hosts_are_down_and_what_was_their_cpu(agents_process, metrics_process, gateway_process):
    agents, metrics, address = agents_process[1], metrics_process[1], gateway_process[1]
    now = int(time.time() * 1000)
    for hostname, cpu in (("quiet-1", 88.5), ("busy-1", 35.0)):
        token = register(agents, hostname)
        stream(metrics, token, cpu_batch(hostname, [now - 2000, now - 1000], [cpu - 10, cpu]))
    time.sleep(3.5)  # both now silent past INFRAWATCH_OFFLINE_AFTER_INTERVALS (3 x 1s)
    overview = ok(gateway(address, "GetFleetOverview", {"top_n": 1}))
    down = {view["agent"]["hostname"]: view for view in overview["recently_down"]}
    assert set(down) == {"quiet-1", "busy-1"}
    assert all(view["agent"]["status"] == "AGENT_STATUS_OFFLINE" for view in down.values())
    assert [m["value"] for m in down["quiet-1"]["latest"] if m["name"] == "cpu_usage_percent"] == [88.5]
    assert overview.get("top_hosts", []) == []  # both silent: neither is "busiest now" by its old value
    counts = {c["status"]: c.get("count", 0) for c in overview["counts"]}
    assert counts["AGENT_STATUS_OFFLINE"] == 2
    history = ok(
        gateway(address, "QueryAgentMetrics", {"agent": {"hostname": "quiet-1"}, "metric": "cpu_usage_percent"})
    )
    assert history["series"][0]["values"] == [78.5, 88.5]


def test_stopping_metrics_gives_partial_answers_and_clear_unavailability(
    agents_process, metrics_process, gateway_process
):
    agents, metrics, address = agents_process[1], metrics_process[1], gateway_process[1]
    token = register(agents, "web-9")
    now = int(time.time() * 1000)
    stream(metrics, token, cpu_batch("web-9", [now - 1000], [12.0]))
    assert ok(gateway(address, "GetAgent", {"agent": {"hostname": "web-9"}}))["agent"]["latest"][0]["value"] == 12
    metrics_process[0].terminate()
    view = ok(gateway(address, "GetAgent", {"agent": {"hostname": "web-9"}}))["agent"]
    assert view["agent"]["hostname"] == "web-9"
    assert view["metrics"] == "AVAILABILITY_UNAVAILABLE"
    listed = ok(gateway(address, "ListAgents", {}))
    assert listed["metrics"] == "AVAILABILITY_UNAVAILABLE" and len(listed["agents"]) == 1
    failed = gateway(address, "QueryAgentMetrics", {"agent": {"hostname": "web-9"}, "metric": "cpu_usage_percent"})
    assert failed.returncode != 0
    assert "Unavailable" in failed.stderr and "metrics service unavailable" in failed.stderr
    gateway_log = gateway_process[0].log()
    assert "QueryAgentMetrics code=UNAVAILABLE" in gateway_log


def test_watch_agent_streams_status_then_samples(agents_process, metrics_process, gateway_process, platform_env):
    agents, metrics, address = agents_process[1], metrics_process[1], gateway_process[1]
    token = register(agents, "live-1")
    watcher = subprocess.Popen(
        [GRPCURL, "-plaintext", "-d", '{"agent": {"hostname": "live-1"}}', address, f"{OPERATOR}/WatchAgent"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        output = read_until(watcher, "AGENT_STATUS_ONLINE")
        # The gateway subscribes to the agent's samples after sending its status: the metrics
        # service counting the subscriber is the signal that no sample can be missed now.
        port = platform_env["INFRAWATCH_METRICS_TELEMETRY_PORT"]
        wait_for(lambda: telemetry_value(port, "infrawatch_watch_subscribers") >= 1, 30, "the relay subscribed")
        stream(metrics, token, cpu_batch("live-1", [int(time.time() * 1000)], [64.25]))
        output = read_until(watcher, "64.25", timeout=10, so_far=output)
        # The host sends no heartbeats: its status goes on to OFFLINE, through STALE when a poll
        # falls between the two.
        output = read_until(watcher, "AGENT_STATUS_OFFLINE", timeout=30, so_far=output)
        statuses = re.findall(r"AGENT_STATUS_[A-Z]+", output)
        assert statuses[0] == "AGENT_STATUS_ONLINE" and statuses[-1] == "AGENT_STATUS_OFFLINE", statuses
        assert set(statuses) <= {"AGENT_STATUS_ONLINE", "AGENT_STATUS_STALE", "AGENT_STATUS_OFFLINE"}, statuses
    finally:
        watcher.kill()
        watcher.wait()


def test_deregister_through_the_gateway_needs_the_operator_token(agents_process, gateway_process):
    register(agents_process[1], "old-1")
    denied = gateway(
        gateway_process[1], "DeregisterAgent", {"agent": {"hostname": "old-1"}}, "authorization: Bearer nope"
    )
    assert denied.returncode != 0 and "Unauthenticated" in denied.stderr
    done = ok(
        gateway(
            gateway_process[1],
            "DeregisterAgent",
            {"agent": {"hostname": "old-1"}},
            "authorization: Bearer e2e-operator",
        )
    )
    assert done["agent"]["status"] == "AGENT_STATUS_DEREGISTERED"
