"""The agent's Prometheus scraping: labels and types as Prometheus gives them, `up` for every
target, and scraped metadata declared once per stream."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from agent.batches import StreamEncoder, portable_batch
from agent.collector import Round
from agent.scrape import ScrapeTarget, parse_exposition, scrape, scrape_targets
from infrawatch.metrics.v1 import metrics_pb2 as pb

EXPOSITION = """\
# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 12345.67
node_cpu_seconds_total{cpu="0",mode="user"} 89.5
# TYPE node_load1 gauge
node_load1 0.42
# TYPE http_seconds histogram
http_seconds_bucket{le="0.1",job="inner",instance="pod-1"} 3
http_seconds_bucket{le="+Inf",job="inner",instance="pod-1"} 4
http_seconds_sum{job="inner",instance="pod-1"} 0.9
http_seconds_count{job="inner",instance="pod-1"} 4
# TYPE rpc_latency summary
rpc_latency{quantile="0.5"} 0.01
rpc_latency_sum 2.5
rpc_latency_count 100
# TYPE requests counter
requests_total{host="spoofed"} 7
requests_created 1.7e9
"""
TARGET = ScrapeTarget("node", "http://127.0.0.1:9100/metrics")


def parsed() -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], dict[str, int]]:
    round_, types = Round(1000), {}
    parse_exposition(EXPOSITION, TARGET, round_, types)
    return {(s.name, s.labels): s.value for s in round_.samples}, types


def test_samples_get_job_and_instance_and_exposed_ones_are_kept_as_exported_labels():
    samples, _ = parsed()
    assert samples[("node_load1", (("instance", "127.0.0.1:9100"), ("job", "node")))] == 0.42
    key = ("node_cpu_seconds_total", (("cpu", "0"), ("instance", "127.0.0.1:9100"), ("job", "node"), ("mode", "idle")))
    assert samples[key] == 12345.67
    bucket = next(labels for name, labels in samples if name == "http_seconds_bucket")
    assert dict(bucket)["exported_job"] == "inner" and dict(bucket)["exported_instance"] == "pod-1"
    assert dict(bucket)["job"] == "node" and dict(bucket)["le"] == "0.1"
    (spoofed,) = [labels for name, labels in samples if name == "requests_total"]
    assert dict(spoofed)["exported_host"] == "spoofed" and "host" not in dict(spoofed)
    assert not any(name.endswith("_created") for name, _ in samples)


def test_counter_like_samples_are_declared_counters_and_the_rest_gauges():
    _, types = parsed()
    assert types["node_cpu_seconds_total"] == pb.METRIC_TYPE_COUNTER
    assert types["http_seconds_bucket"] == types["http_seconds_count"] == pb.METRIC_TYPE_COUNTER
    assert types["rpc_latency_sum"] == pb.METRIC_TYPE_COUNTER
    assert types["node_load1"] == types["rpc_latency"] == pb.METRIC_TYPE_GAUGE


@pytest.fixture
def exporter() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = EXPOSITION.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()


def test_a_reachable_target_is_up_and_an_unreachable_one_down(exporter: str):
    good = scrape(ScrapeTarget("app", exporter), timeout_s=5)
    assert good.up and good.error == ""
    values = {(s.name, dict(s.labels)["job"]): s.value for s in good.round.samples}
    assert values[("up", "app")] == 1.0 and values[("scrape_samples_scraped", "app")] == 11.0

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    bad = scrape(ScrapeTarget("gone", f"http://127.0.0.1:{port}/metrics"), timeout_s=2)
    assert not bad.up and "refused" in bad.error.lower()
    assert [(s.name, s.value) for s in bad.round.samples if s.name == "up"] == [("up", 0.0)]
    assert {s.name for s in bad.round.samples} == {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def test_scraped_types_travel_with_the_batch_and_are_declared_once_per_stream():
    _, types = parsed()
    round_ = Round(1000)
    round_.add("node_load1", 0.5, job="node", instance="x")
    payload = portable_batch(round_, types)
    encoder = StreamEncoder()
    first, second = encoder.encode(1, payload), encoder.encode(2, payload)
    # The scraped `http_seconds_count` type travels with the batch; node_exporter's names, which the agent
    # collects itself, are declared as the agent declares them, once a series of theirs is sent.
    declared = {m.name: m.type for m in first.metadata}
    assert (
        declared["http_seconds_count"] == 2 and declared["node_load1"] == 1 and "node_cpu_seconds_total" not in declared
    )
    assert list(second.metadata) == []


@pytest.mark.parametrize("raw", ["node", "node=ftp://x/metrics", "=http://x:1/metrics", "node=http:///metrics"])
def test_a_malformed_target_is_refused_with_the_expected_form(raw: str):
    with pytest.raises(ValueError, match="job=http://host:port/path"):
        scrape_targets(raw)


def test_targets_are_read_from_job_url_pairs():
    assert scrape_targets(" a=http://h:1/metrics, b=https://k:2/x ,") == (
        ScrapeTarget("a", "http://h:1/metrics"),
        ScrapeTarget("b", "https://k:2/x"),
    )


def test_label_names_that_are_python_keywords_or_parameters_are_kept():
    """Found by the real node_exporter: labels called `name` (systemd units, network devices)."""
    round_, types = Round(1000), {}
    parse_exposition('node_network_info{name="eth0",value="x",self="y"} 1\n', TARGET, round_, types)
    (sample,) = round_.samples
    assert dict(sample.labels)["name"] == "eth0" and dict(sample.labels)["value"] == "x"
