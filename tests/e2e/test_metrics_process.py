"""The metrics service as a real process next to the agents service, driven by grpcurl via reflection."""

import json
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.e2e.conftest import ENROLL_HEADER
from tests.e2e.processes import GRPCURL, grpcurl, read_until, run_readme_recipe, telemetry_value, wait_for


def register(agents_address: str, hostname: str) -> str:
    reply = grpcurl(
        "-plaintext", "-H", ENROLL_HEADER, "-d", json.dumps({"hostname": hostname}), agents_address,
        "infrawatch.agents.v1.AgentService/RegisterAgent",
    )  # fmt: skip
    assert reply.returncode == 0, reply.stderr
    return str(json.loads(reply.stdout)["agent_token"])


def json_messages(text: str) -> list[dict]:
    decoder, text, messages = json.JSONDecoder(), text.strip(), []
    while text:
        message, end = decoder.raw_decode(text)
        messages.append(message)
        text = text[end:].strip()
    return messages


def stream(metrics_address: str, token: str, *batches: dict) -> list[dict]:
    result = subprocess.run(
        [GRPCURL, "-plaintext", "-H", f"authorization: Bearer {token}", "-d", "@", metrics_address,
         "infrawatch.metrics.v1.MetricsService/StreamMetrics"],
        input="\n".join(json.dumps(b) for b in batches), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json_messages(result.stdout)


def call(address: str, method: str, body: dict) -> dict:
    reply = grpcurl("-plaintext", "-d", json.dumps(body), address, f"infrawatch.metrics.v1.MetricsService/{method}")
    assert reply.returncode == 0, reply.stderr
    return json.loads(reply.stdout)


def rfc3339(epoch_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_ms // 1000)) + f".{epoch_ms % 1000:03d}Z"


def test_readme_metrics_recipes_work_verbatim(agents_process, metrics_process, tmp_path: Path):
    result = run_readme_recipe(
        "metrics", {"localhost:50051": agents_process[1], "localhost:50052": metrics_process[1]}, tmp_path
    )
    assert result.returncode == 0, result.stderr
    acks = [m for m in json_messages(result.stdout) if "samples_accepted" in m]
    assert [(a["sequence"], a["samples_accepted"]) for a in acks] == [("1", 2), ("2", 2)]
    assert "47.25" in result.stdout
    assert "METRIC_TYPE_GAUGE" in result.stdout


def test_every_query_rpc_through_grpcurl_gives_exact_answers(agents_process, metrics_process):
    agents, metrics = agents_process[1], metrics_process[1]
    token = register(agents, "web-7")
    t0 = (int(time.time()) // 60) * 60_000 - 600_000
    labels = [{"name": "__name__", "value": "load1"}, {"name": "host", "value": "web-7"}]
    acks = stream(
        metrics,
        token,
        {"sequence": 1, "series": [{"ref": 3, "labels": labels, "timestamps_ms": [t0, t0 + 10_000], "values": [1, 2]}]},
        {"sequence": 2, "series": [{"ref": 3, "timestamps_ms": [t0 + 20_000, t0 + 70_000], "values": [3, 10]}]},
    )
    assert [(a["sequence"], a["samples_accepted"]) for a in acks] == [("1", 2), ("2", 2)]
    start, end = rfc3339(t0), rfc3339(t0 + 119_999)
    raw = call(metrics, "QueryRange", {"selector": {"selector": "load1"}, "start": start, "end": end})
    assert raw["series"][0]["values"] == [1, 2, 3, 10]
    average = {
        "selector": {"selector": "load1"},
        "start": start,
        "end": end,
        "step": "60s",
        "aggregation": "AGGREGATION_AVG",
    }
    assert call(metrics, "QueryRange", average)["series"][0]["values"] == [2, 10]
    latest = call(metrics, "LatestValues", {"selector": {"selector": 'load1{host="web-7"}'}})
    assert latest["samples"][0]["value"] == 10
    assert call(metrics, "ListSeries", {})["series"][0]["labels"] == labels
    assert call(metrics, "ListMetricNames", {})["metrics"][0]["name"] == "load1"


def test_watch_through_grpcurl_sees_a_new_sample_promptly(agents_process, metrics_process, platform_env):
    agents, metrics = agents_process[1], metrics_process[1]
    token = register(agents, "web-8")
    watcher = subprocess.Popen(
        [GRPCURL, "-plaintext", "-d", '{"selector": {"selector": "temp_celsius"}}', metrics,
         "infrawatch.metrics.v1.MetricsService/WatchMetrics"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Once the service counts the subscriber, no committed sample can be missed.
        port = platform_env["INFRAWATCH_METRICS_TELEMETRY_PORT"]
        wait_for(lambda: telemetry_value(port, "infrawatch_watch_subscribers") >= 1, 30, "the watch subscribed")
        now = int(time.time() * 1000)
        labels = [{"name": "__name__", "value": "temp_celsius"}, {"name": "host", "value": "web-8"}]
        stream(
            metrics, token, {"sequence": 1, "series": [{"labels": labels, "timestamps_ms": [now], "values": [21.5]}]}
        )
        committed = time.monotonic()
        received = read_until(watcher, '"values"', timeout=5)
        assert time.monotonic() - committed < 1.0
        received = read_until(watcher, "]", timeout=5, so_far=received)
        assert received.split('"values": [', 1)[1].split("]", 1)[0].strip() == "21.5"
    finally:
        watcher.kill()
        watcher.wait()


def test_stream_without_a_valid_token_is_unauthenticated(metrics_process):
    result = subprocess.run(
        [GRPCURL, "-plaintext", "-H", "authorization: Bearer iwa_forged", "-d", '{"sequence": 1}', metrics_process[1],
         "infrawatch.metrics.v1.MetricsService/StreamMetrics"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Unauthenticated" in result.stderr


def scrape(port: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics and parse it with prometheus_client's own parser: {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_service_exposes_its_own_telemetry_in_the_prometheus_format(agents_process, metrics_process, platform_env):
    agents, metrics = agents_process[1], metrics_process[1]
    token = register(agents, "telemetry-host")
    t0 = (int(time.time()) // 60) * 60_000 - 600_000
    labels = [{"name": "__name__", "value": "load1"}]
    bad = [{"name": "__name__", "value": "load1"}, {"name": "not a label name", "value": "x"}]
    stream(
        metrics,
        token,
        {"sequence": 1, "series": [
            {"labels": labels, "timestamps_ms": [t0, t0 + 10_000], "values": [1, 2]},
            {"labels": bad, "timestamps_ms": [t0, t0 + 10_000], "values": [1, 2]},  # rejected: INVALID_LABELS
        ]},
    )  # fmt: skip
    call(metrics, "QueryRange", {"selector": {"selector": "load1"}, "start": rfc3339(t0), "end": rfc3339(t0 + 60_000)})
    found = scrape(platform_env["INFRAWATCH_METRICS_TELEMETRY_PORT"])

    def value(name: str, **labels: str) -> float:
        return found.get((name, tuple(sorted(labels.items()))), 0.0)

    service = "infrawatch.metrics.v1.MetricsService"
    assert (
        value("infrawatch_grpc_server_handled_total", grpc_service=service, grpc_method="QueryRange", grpc_code="OK")
        == 1
    )
    assert (
        value("infrawatch_grpc_server_handled_total", grpc_service=service, grpc_method="StreamMetrics", grpc_code="OK")
        == 1
    )
    assert value("infrawatch_grpc_server_handling_seconds_count", grpc_service=service, grpc_method="QueryRange") == 1
    assert value("infrawatch_ingest_samples_total", outcome="accepted") == 2
    assert value("infrawatch_ingest_samples_total", outcome="rejected") == 2
    assert value("infrawatch_ingest_rejected_samples_total", reason="invalid_labels") == 2
    assert value("infrawatch_ingest_batches_total") == 1
    assert value("infrawatch_ingest_ack_seconds_count") == 1
    assert value("infrawatch_query_seconds_count", kind="raw") == 1
    assert value("infrawatch_series") >= 1
    assert value("process_resident_memory_bytes") > 0
