"""Issue 21, with a real Prometheus at its **default** settings for longer than its periodic
behaviour: a 15 s scrape of itself and of a real node_exporter, metadata sent as Prometheus sends
it (every minute by default; here every 20 s so the run sees several sends), remote-writing to
InfraWatch for more than three minutes while the metrics service is restarted once.

The previous e2e test (1 s scrape, 40 s) finished before the first metadata send and so never saw
every counter refused after it. This one checks what a Prometheus user sees: no failed sample,
retries only around the restart, every sample Prometheus' own TSDB holds is in InfraWatch exactly
once, and the metadata API shows counters as counters and histograms as histograms.

Also: answers over one kept-alive connection are not delayed by Nagle's algorithm, and hostile
remote-write bodies leave the metrics process's memory within a stated bound."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from pathlib import Path

import cramjam
import pytest

from infrawatch.metrics.v1 import remote_write_pb2 as wire
from tests.e2e.conftest import METRICS_SERVICE, start
from tests.e2e.processes import wait_for
from tests.e2e.test_prometheus_side import (
    Prometheus,
    create_credential,
    get_json,
    keyed,
    post,
    query,
    remote_write,
)

SCRAPE_S = 15  # Prometheus' default scrape_interval, written out so the test says what it relies on


@pytest.fixture
def e2e_database_url(postgres_schema_url: str) -> str:
    """PostgreSQL, the production store: the run is long, so it runs on one store only."""
    return postgres_schema_url


@pytest.fixture
def platform_env(platform_env: dict[str, str]) -> dict[str, str]:
    return {**platform_env, "INFRAWATCH_AUTH_CACHE_TTL": "1s"}


@pytest.mark.timeout(480)
def test_a_default_prometheus_loses_nothing_over_minutes_of_metadata_sends_and_a_metrics_restart(
    gateway_process, metrics_process, platform_env, node_exporter: str, tmp_path: Path
):
    api = f"http://127.0.0.1:{platform_env['INFRAWATCH_PROM_PORT']}"
    token_file = tmp_path / "remote-write-token"
    token_file.write_text(create_credential(gateway_process[1], "prometheus-defaults"))
    # Everything at its default except what a test must shorten to see repetitions: the metadata
    # send interval (1m by default) and nothing else. The scrape interval is the 15 s of the
    # prometheus.yml Prometheus ships (its built-in default is 1m). The README's own snippet.
    prometheus = Prometheus(
        tmp_path,
        f"""
global:
  scrape_interval: {SCRAPE_S}s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:PROMETHEUS_PORT']
  - job_name: node
    static_configs:
      - targets: ['{node_exporter.split("/")[2]}']
remote_write:
  - url: {api}/api/v1/write
    authorization:
      credentials_file: {token_file}
    metadata_config:
      send_interval: 20s
""",
    )
    restarted: list = []
    try:
        began = time.time()
        wait_for(lambda: prometheus.metric("prometheus_remote_storage_metadata_total") > 0, 90, "first metadata send")
        time.sleep(45)  # more scrapes and metadata sends before the restart
        assert prometheus.metric("prometheus_remote_storage_samples_retried_total") == 0, prometheus.log.read_text()
        assert prometheus.metric("prometheus_remote_storage_samples_failed_total") == 0, prometheus.log.read_text()

        assert metrics_process[0].terminate() == 0
        time.sleep(5)  # Prometheus meets a refused connection and retries
        restarted.append(
            start("services.metrics", platform_env, "INFRAWATCH_METRICS_PORT", METRICS_SERVICE, tmp_path / "m2.log")
        )
        time.sleep(30)
        retried_after_restart = prometheus.metric("prometheus_remote_storage_samples_retried_total")
        # Then well over a minute of steady running: more metadata sends, idle keep-alive gaps.
        wait_for(lambda: time.time() - began > 200, 240, "three minutes and more of remote-write")
        assert prometheus.metric("prometheus_remote_storage_samples_failed_total") == 0, prometheus.log.read_text()
        assert prometheus.metric("prometheus_remote_storage_samples_retried_total") == retried_after_restart, (
            "retries away from the restart:\n" + prometheus.log.read_text()
        )
        assert prometheus.metric("prometheus_remote_storage_metadata_total") >= 4

        cutoff = time.time() - 2
        wait_for(
            lambda: prometheus.metric("prometheus_remote_storage_queue_highest_sent_timestamp_seconds") > cutoff + 1,
            90,
            "remote-write caught up",
        )
        # Every sample Prometheus holds from its first scrape to the cutoff, in both.
        window = int(cutoff - began) + 2 * SCRAPE_S
        selector = f'{{job=~"node|prometheus"}}[{window}s]'
        at = f"{cutoff:.3f}"
        expected = keyed(query(prometheus.url, "query", query=selector, time=at)["data"]["result"])
        stored = keyed(query(api, "query", query=selector, time=at)["data"]["result"])
        assert len(expected) > 500
        lengths = sorted(len(samples) for samples in expected.values())
        median = lengths[len(lengths) // 2]
        assert median >= 150 // SCRAPE_S, f"median {median} samples a series"  # minutes, the restart inside
        missing = sorted(set(expected) - set(stored))
        assert not missing, f"{len(missing)} series missing, e.g. {missing[:3]}"
        assert not set(stored) - set(expected)
        different = [labels for labels, samples in expected.items() if stored[labels] != samples]
        assert not different, f"{len(different)} series differ, e.g. {different[0]}: {stored[different[0]][:3]}"

        # No sample refused for its type; the families as Prometheus declares them.
        metadata = get_json(f"{api}/api/v1/metadata")["data"]
        assert metadata["node_cpu_seconds_total"][0]["type"] == "counter"
        assert metadata["prometheus_http_request_duration_seconds"][0]["type"] == "histogram"
        assert metadata["go_goroutines"][0]["type"] == "gauge"
        assert "prometheus_http_request_duration_seconds_bucket" not in metadata
        assert get_json(f"{api}/api/v1/metadata?metric=node_cpu_seconds_total")["data"].keys() == {
            "node_cpu_seconds_total"
        }
    finally:
        prometheus.stop()
        for process, _ in restarted:
            process.kill()


def test_answers_over_one_kept_alive_connection_are_quick_and_it_stays_open_when_idle(metrics_process, platform_env):
    connection = http.client.HTTPConnection("127.0.0.1", int(platform_env["INFRAWATCH_PROM_PORT"]), timeout=10)
    try:
        times = []
        for _ in range(21):
            began = time.perf_counter()
            connection.request("GET", "/api/v1/query?query=42")
            reply = connection.getresponse()
            assert reply.status == 200 and b'"42"' in reply.read()
            times.append(time.perf_counter() - began)
        # The first answer opens the connection; the 20 after it reuse it (43 ms each before).
        assert max(times[1:]) < 0.005 * 4 and sorted(times[1:])[10] < 0.005, times
        # Idle past uvicorn's default keep-alive (5 s): the server has not closed it (http.client
        # does not reconnect by itself, so a closed connection would fail here).
        socket_before = connection.sock
        time.sleep(7)
        connection.request("GET", "/api/v1/query?query=1")
        assert connection.getresponse().read() and connection.sock is socket_before
    finally:
        connection.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def tiny_series(count: int) -> bytes:
    series = [
        wire.PromTimeSeries(labels=[wire.PromLabel(name="__name__", value=f"t{i}")]).SerializeToString()
        for i in range(count)
    ]
    return b"".join(b"\x0a" + bytes([len(s)]) + s for s in series)


def nested_nothing(depth: int) -> bytes:
    """A time series whose labels field holds a label holding a label ... empty all the way down."""
    inner = b""
    for _ in range(depth):
        inner = b"\x0a" + _varint(len(inner)) + inner
    return b"\x0a" + _varint(len(inner)) + inner


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@pytest.fixture
def hostile_bodies() -> Iterator[dict[str, tuple[bytes, int]]]:
    huge_label = wire.PromWriteRequest(
        timeseries=[
            wire.PromTimeSeries(
                labels=[
                    wire.PromLabel(name="__name__", value="x"),
                    wire.PromLabel(name="blob", value="y" * (30 << 20)),
                ],
                samples=[wire.PromSample(timestamp=int(time.time() * 1000), value=1.0)],
            )
        ]
    ).SerializeToString()
    # Each with the status it must get: refused before the work (413), its one series rejected
    # unparsed (400), nothing to store and nothing parsed (204).
    yield {
        "many tiny series": (tiny_series(2_000_000), 413),
        "one huge label": (huge_label, 400),
        "deep nesting of nothing": (nested_nothing(100_000), 204),
        "empty samples": (b"\x0a" + _varint(2 + 2 * 4_000_000) + b"\x0a\x00" + b"\x12\x00" * 4_000_000, 413),
    }


RSS_GROWTH_BOUND = 400 << 20
"""What four rounds of these bodies may add to the metrics process's resident memory while they are
handled (each is under the 64 MiB decompressed limit): before, 2 M tiny series alone took ~900 MB,
and four at once took the process from 301 MB to 3.9 GB."""
RSS_AFTER_BOUND = 100 << 20
"""What may stay once they have been refused."""


def test_hostile_remote_write_bodies_are_refused_within_a_memory_bound_and_the_memory_returns(
    gateway_process, metrics_process, platform_env, hostile_bodies, tmp_path: Path
):
    api = f"http://127.0.0.1:{platform_env['INFRAWATCH_PROM_PORT']}"
    token = create_credential(gateway_process[1], "hostile")
    pid = metrics_process[0].process.pid
    headers = {"Authorization": f"Bearer {token}", "Content-Encoding": "snappy"}
    status, _ = post(f"{api}/api/v1/write", bytes(cramjam.snappy.compress_raw(tiny_series(10))), headers)
    assert status == 204  # warmed up: the session and the pools exist
    baseline = rss_bytes(pid)
    peak = baseline
    for _ in range(4):
        for name, (body, wanted) in hostile_bodies.items():
            compressed = bytes(cramjam.snappy.compress_raw(body))
            status, text = post(f"{api}/api/v1/write", compressed, headers)
            assert status == wanted, (name, status, text)
            assert status == 204 or "limit" in text or "bytes" in text, (name, text)
            peak = max(peak, rss_bytes(pid))
    assert peak - baseline < RSS_GROWTH_BOUND, f"peak {peak >> 20} MiB over a baseline of {baseline >> 20} MiB"
    time.sleep(1.5)
    status, _ = post(f"{api}/api/v1/write", bytes(cramjam.snappy.compress_raw(tiny_series(10))), headers)
    assert status == 204
    after = rss_bytes(pid)
    assert after - baseline < RSS_AFTER_BOUND, f"{after >> 20} MiB after, baseline {baseline >> 20} MiB"


def test_the_endpoints_grafana_calls_answer_as_prometheus_does(gateway_process, metrics_process, platform_env):
    api = f"http://127.0.0.1:{platform_env['INFRAWATCH_PROM_PORT']}"
    token = create_credential(gateway_process[1], "grafana-endpoints")
    now = int(time.time())
    old = (("__name__", "node_load1"), ("instance", "old:9100"), ("job", "node"))
    new = (("__name__", "node_load1"), ("instance", "new:9100"), ("job", "node"))
    remote_write(api, token, {old: [(now - 7200, 1.0)], new: [(now - 60, 2.0)]})

    def data(path: str, **params: str):
        answer = query(api, path, **params)
        assert answer["status"] == "success", answer
        return answer["data"]

    recent = {"start": str(now - 600), "end": str(now)}
    assert [s["instance"] for s in data("series", **{"match[]": "node_load1"}, **recent)] == ["new:9100"]
    assert data("series", **{"match[]": "node_load1", "start": str(now - 86400), "end": str(now - 80000)}) == []
    assert data("label/instance/values", **recent) == ["new:9100"]
    assert len(data("label/instance/values")) >= 2  # no window: the whole index
    assert "instance" in data("labels", **recent)
    limited = query(api, "series", **{"match[]": "node_load1", "limit": "1"})
    assert len(limited["data"]) == 1 and "truncated" in limited["warnings"][0]
    assert data("query_exemplars", query="node_load1", start=str(now - 600), end=str(now)) == []
    assert data("format_query", query="sum(rate(x[5m]))by(job)") == "sum by (job) (rate(x[5m]))"
    assert "yaml" in data("status/config")
    assert data("status/flags")["query.lookback-delta"] == "300s"
    assert data("status/runtimeinfo")["storageRetention"]
    tsdb = data("status/tsdb")
    assert tsdb["headStats"]["numSeries"] >= 2
    assert {"name": "node_load1", "value": 2} in tsdb["seriesCountByMetricName"]
    assert data("targets")["activeTargets"] == []  # no agent scrapes anything here
    bad = post(f"{api}/api/v1/series?match[]=up&limit=-1", b"", {})
    assert bad[0] == 400 and "limit" in bad[1]
