"""Issue 15, parts 3 and 4, with clients nobody here wrote: a real Prometheus remote-writing what it
scrapes from a real node_exporter, promtool querying InfraWatch's API, and a real Prometheus
loaded with the same data (promtool tsdb create-blocks-from openmetrics) answering a list of
PromQL queries that InfraWatch must answer identically.

Debian's `prometheus` and `prometheus-node-exporter` packages provide the binaries (.ci/run
installs them); without them these tests skip on a laptop and fail in CI."""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import cramjam
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infrawatch.metrics.v1 import remote_write_pb2 as wire
from tests.e2e.conftest import METRICS_SERVICE, binary, start
from tests.e2e.processes import free_port, grpcurl, run_readme_recipe, wait_for

OPERATOR = "e2e-operator"


@pytest.fixture
def platform_env(platform_env: dict[str, str]) -> dict[str, str]:
    """The shared test platform, with the metrics service re-checking tokens every second (so a
    revocation shows quickly)."""
    return {**platform_env, "INFRAWATCH_AUTH_CACHE_TTL": "1s", "INFRAWATCH_MAX_REMOTE_WRITE_BYTES": str(4 << 20)}


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.load(reply)


def query(base: str, path: str, **params: str) -> dict:
    return get_json(f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}")


def create_credential(gateway: str, name: str) -> str:
    created = grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {OPERATOR}",
        "-d",
        json.dumps({"name": name}),
        gateway,
        "infrawatch.gateway.v1.OperatorService/CreateRemoteWriteCredential",
    )
    assert created.returncode == 0, created.stderr
    return json.loads(created.stdout)["token"]


class Prometheus:
    """A real Prometheus server on a free port, with its own data directory."""

    def __init__(self, workdir: Path, config: str, data: Path | None = None, flags: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "prometheus.yml").write_text(config.replace("PROMETHEUS_PORT", str(self.port)))
        self.log = workdir / "prometheus.log"
        self.process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={data or workdir / 'tsdb'}",
                "--storage.tsdb.retention.time=30d",
                f"--web.listen-address=127.0.0.1:{self.port}",
                *flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
        )
        wait_for(self._ready, timeout=60, what="Prometheus ready")

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:
            urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).close()
            return True
        except OSError:
            return False

    def metric(self, name: str) -> float:
        """The sum of a metric of Prometheus' own telemetry (its /metrics page)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def keyed(result: list[dict]) -> dict[tuple, list]:
    return {tuple(sorted(series["metric"].items())): series.get("values") or [series["value"]] for series in result}


def test_a_real_prometheus_remote_writes_every_sample_exactly_once_and_a_revoked_credential_stops_it(
    gateway_process,
    platform_env,
    node_exporter: str,
    tmp_path: Path,
):
    api = f"http://127.0.0.1:{platform_env['INFRAWATCH_PROM_PORT']}"
    token_file = tmp_path / "remote-write-token"
    token_file.write_text(create_credential(gateway_process[1], "prometheus-e2e"))
    prometheus = Prometheus(
        tmp_path,
        f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ['{node_exporter.split("/")[2]}']
remote_write:
  - url: {api}/api/v1/write
    authorization:
      credentials_file: {token_file}
    queue_config:
      batch_send_deadline: 1s
""",
    )
    try:
        wait_for(lambda: prometheus.metric("prometheus_remote_storage_samples_total") > 5_000, 90, "samples sent")
        cutoff = time.time() - 3
        wait_for(
            lambda: prometheus.metric("prometheus_remote_storage_queue_highest_sent_timestamp_seconds") > cutoff + 2,
            60,
            "remote-write caught up",
        )
        assert prometheus.metric("prometheus_remote_storage_samples_failed_total") == 0, prometheus.log.read_text()
        at = f"{cutoff:.3f}"
        expected = keyed(query(prometheus.url, "query", query='{job="node"}[15s]', time=at)["data"]["result"])
        stored = keyed(query(api, "query", query='{job="node"}[15s]', time=at)["data"]["result"])
        assert len(expected) > 200
        # Every series, every sample: same timestamps, same values, nothing missing, nothing twice.
        assert stored.keys() == expected.keys()
        for labels, samples in expected.items():
            assert stored[labels] == samples, labels

        revoked = grpcurl(
            "-plaintext",
            "-H",
            f"authorization: Bearer {OPERATOR}",
            "-d",
            '{"credential": "prometheus-e2e"}',
            gateway_process[1],
            "infrawatch.gateway.v1.OperatorService/RevokeRemoteWriteCredential",
        )
        assert revoked.returncode == 0, revoked.stderr
        # A 401 is not retried by Prometheus: it counts the samples as failed.
        wait_for(lambda: prometheus.metric("prometheus_remote_storage_samples_failed_total") > 0, 60, "refused")
    finally:
        prometheus.stop()


def test_the_readme_prometheus_recipe_works_against_the_platform(gateway_process, platform_env, tmp_path: Path):
    """The README's commands as written: issue a remote-write credential, push through
    remote-write, read back with promtool (instant, range, series, labels)."""
    binary("promtool")
    api = f"http://127.0.0.1:{platform_env['INFRAWATCH_PROM_PORT']}"
    now = int(time.time())
    remote_write(api, create_credential(gateway_process[1], "seed"), {UP: [(now - 20, 1.0), (now - 10, 1.0)]})
    done = run_readme_recipe(
        "prometheus",
        {"localhost:50050": gateway_process[1], "localhost:9201": f"localhost:{platform_env['INFRAWATCH_PROM_PORT']}"},
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'up{instance="127.0.0.1:9152", job="infrawatch-metrics"} => 1' in done.stdout, done.stdout
    assert '{job="infrawatch-metrics"} =>' in done.stdout  # the range query's series
    assert (tmp_path / "infrawatch-token").read_text().startswith("iwr_")
    assert done.stdout.count("prometheus-eu-1") == 2  # listed, then revoked
    assert "revoked_at" in done.stdout


UP = (("__name__", "up"), ("instance", "127.0.0.1:9152"), ("job", "infrawatch-metrics"))


# --- the same data in Prometheus and in InfraWatch, the same answers ------------------------------


def write_request(data: dict) -> bytes:
    """A snappy-compressed remote-write body of series -> [(timestamp s, value)]."""
    request = wire.PromWriteRequest(
        timeseries=[
            wire.PromTimeSeries(
                labels=[wire.PromLabel(name=k, value=v) for k, v in labels],
                samples=[wire.PromSample(timestamp=t * 1000, value=v) for t, v in points],
            )
            for labels, points in data.items()
        ]
    )
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def send(url: str, body: bytes, token: str = "") -> None:
    """POSTs a remote-write body (to InfraWatch with a token, to Prometheus' receiver without)."""
    headers = {
        "Content-Encoding": "snappy",
        "Content-Type": "application/x-protobuf",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    sent = urllib.request.Request(f"{url}/api/v1/write", data=body, method="POST", headers=headers)
    with urllib.request.urlopen(sent, timeout=120) as reply:
        assert reply.status in (200, 204)


def remote_write(api: str, token: str, data: dict) -> None:
    send(api, write_request(data), token)


def same(expected: str, actual: str) -> bool:
    a, b = float(expected), float(actual)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def differences(expected: dict, actual: dict) -> list[str]:
    problems = []
    if expected.keys() != actual.keys():
        problems.append(
            f"series differ: only in Prometheus {sorted(expected.keys() - actual.keys())[:3]}, "
            f"only in InfraWatch {sorted(actual.keys() - expected.keys())[:3]}"
        )
    for labels in expected.keys() & actual.keys():
        want, got = expected[labels], actual[labels]
        if [t for t, _ in want] != [t for t, _ in got]:
            problems.append(f"{labels}: timestamps differ ({len(want)} vs {len(got)} points)")
            continue
        wrong = [(t, w, g) for (t, w), (_, g) in zip(want, got, strict=True) if not same(w, g)]
        if wrong:
            problems.append(f"{labels}: {len(wrong)} values differ, first {wrong[0]}")
    return problems


def test_malformed_oversized_and_too_deep_queries_are_refused_as_bad_data_quickly(metrics_process, platform_env):
    api = f"http://127.0.0.1:{platform_env['INFRAWATCH_PROM_PORT']}"
    for expr, named in (
        ("sum(", "unclosed"),
        ('up{a="x" or b="y"}', "'or' inside a selector"),
        ("(" * 3000 + "up" + ")" * 3000, "nests deeper than"),
        ("-" * 5000 + "up", "nests deeper than"),
        ("1" + " + 1" * 6000, "more than 400 operators"),  # the parser itself would crash on this
        ("up" + " " * (70 * 1024), "longer than 64 KiB"),
    ):
        began = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as refused:
            query(api, "query", query=expr)
        body = json.loads(refused.value.read())
        assert refused.value.code == 400 and body["errorType"] == "bad_data", body
        assert named in body["error"], body
        assert time.monotonic() - began < 2.0, expr[:40]
    assert metrics_process[0].process.poll() is None


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    sent = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(sent, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def test_hostile_remote_write_and_query_requests_get_a_clear_status_never_a_500(
    gateway_process, platform_env, tmp_path: Path
):
    api = f"http://127.0.0.1:{platform_env['INFRAWATCH_PROM_PORT']}"
    token = create_credential(gateway_process[1], "hostile")
    write = f"{api}/api/v1/write"
    auth = {"Authorization": f"Bearer {token}"}
    good = bytes(cramjam.snappy.compress_raw(wire.PromWriteRequest().SerializeToString()))
    cases = [
        (write, good, {}, 401, "missing credential"),
        (write, good, {"Authorization": "Bearer iwr_forged"}, 401, "not valid"),
        (write, good, {"Authorization": "Bearer iwa_forged"}, 401, "not valid"),
        (write, b"not snappy at all", auth, 400, "snappy"),
        (write, bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff")), auth, 400, "WriteRequest"),
        (write, b"\xff\xff\xff\xff\x0f" + b"\x00" * 10, auth, 413, "limit"),
        (write, good, auth, 204, ""),
        (f"{api}/api/v1/query", b"query=sum(", {"Content-Type": "application/x-www-form-urlencoded"}, 400, "bad_data"),
        (f"{api}/api/v1/query", b"", {"Content-Type": "application/x-www-form-urlencoded"}, 400, "query parameter"),
        (
            f"{api}/api/v1/query",
            b"query=up&time=yesterday",
            {"Content-Type": "application/x-www-form-urlencoded"},
            400,
            "time",
        ),
        (
            f"{api}/api/v1/query_range",
            b"query=up&start=0&end=1000000&step=1",
            {"Content-Type": "application/x-www-form-urlencoded"},
            400,
            "11,000",
        ),
        (
            f"{api}/api/v1/query_range",
            b"query=up&start=0&end=10&step=0",
            {"Content-Type": "application/x-www-form-urlencoded"},
            400,
            "step",
        ),
        (
            f"{api}/api/v1/query",
            b'query=x{a=~"(((("}',
            {"Content-Type": "application/x-www-form-urlencoded"},
            400,
            "bad_data",
        ),
        (
            f"{api}/api/v1/query",
            b'query={a=""}',
            {"Content-Type": "application/x-www-form-urlencoded"},
            400,
            "non-empty",
        ),
        (f"{api}/api/v1/series", b"", {"Content-Type": "application/x-www-form-urlencoded"}, 400, "match[]"),
    ]
    for url, body, headers, status, says in cases:
        got, text = post(url, body, headers)
        assert got == status and says in text, (url, body[:40], got, text)
    # Past the size limit (4 MiB here), declared or not: refused while it arrives.
    big = b"\x00" * (5 << 20)
    assert post(write, big, auth)[0] == 413
    chunked = urllib.request.Request(write, data=iter([big[: 1 << 20]] * 5), method="POST", headers=auth)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(chunked, timeout=30)
    assert refused.value.code == 413
    # Still healthy and still storing after all of it.
    assert post(write, good, auth)[0] == 204
    assert query(api, "query", query="vector(1)")["status"] == "success"


def test_with_protected_reads_the_query_api_wants_the_operator_token(agents_process, platform_env, tmp_path: Path):
    env = {**platform_env, "INFRAWATCH_PROTECT_READS": "true"}
    metrics, _ = start("services.metrics", env, "INFRAWATCH_METRICS_PORT", METRICS_SERVICE, tmp_path / "m.log")
    try:
        url = f"http://127.0.0.1:{env['INFRAWATCH_PROM_PORT']}/api/v1/query?query=vector(1)"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401
        assert json.loads(refused.value.read())["errorType"] == "unauthorized"
        allowed = urllib.request.Request(url, headers={"Authorization": f"Bearer {OPERATOR}"})
        with urllib.request.urlopen(allowed, timeout=10) as reply:
            assert json.load(reply)["data"]["result"][0]["value"][1] == "1"
    finally:
        metrics.kill()


def test_a_promql_query_reading_more_than_its_sample_budget_is_refused_as_an_execution_error(
    agents_process, platform_env, tmp_path: Path
):
    env = {**platform_env, "INFRAWATCH_PROMQL_MAX_SAMPLES": "10"}
    metrics, _ = start("services.metrics", env, "INFRAWATCH_METRICS_PORT", METRICS_SERVICE, tmp_path / "m.log")
    try:
        created = grpcurl(
            "-plaintext",
            "-H",
            f"authorization: Bearer {OPERATOR}",
            "-d",
            '{"name": "budget"}',
            agents_process[1],
            "infrawatch.agents.v1.AgentService/CreateRemoteWriteCredential",
        )
        assert created.returncode == 0, created.stderr
        api = f"http://127.0.0.1:{env['INFRAWATCH_PROM_PORT']}"
        now = int(time.time())
        remote_write(api, json.loads(created.stdout)["token"], {UP: [(now - 300 + 10 * k, 1.0) for k in range(25)]})
        at = str(now - 60)  # the newest sample
        assert query(api, "query", query="count_over_time(up[55s])", time=at)["data"]["result"][0]["value"][1] == "6"
        with pytest.raises(urllib.error.HTTPError) as refused:
            query(api, "query", query="count_over_time(up[5m])", time=at)
        body = json.loads(refused.value.read())
        assert refused.value.code == 422 and body["errorType"] == "execution"
        assert "INFRAWATCH_PROMQL_MAX_SAMPLES" in body["error"]
    finally:
        metrics.kill()
