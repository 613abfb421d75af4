"""`make bench-promql`: PromQL over the Prometheus HTTP API, InfraWatch against Debian's Prometheus.

Both hold the workload of `make bench` (100 hosts x 10 metrics x 1,000 samples at 10 s: 1,000
series, 1 M samples, 2.8 h): InfraWatch receives it over its gRPC stream as an agent sends it,
Prometheus over its remote-write receiver in time order, with the label sets InfraWatch stored.
Then each query is sent as a Grafana panel sends it, a range query over one kept-alive HTTP
connection per server, WARM_UP untimed and RUNS timed; the answers of both are compared. All of
it twice: on the freshly ingested chunks, and after compaction has packed every window.

Targets (issue 23, p50): a raw 1,000-point series ≤ 1 ms, `avg(avg_over_time(cpu[5m]))` at 300 s
steps ≤ 2 ms, `sum(rate(net_rx_bytes_total[5m]))` at 60 s ≤ 3 ms, `rate(...)` of 100 series
≤ 12 ms; over the mix (dashboard and alert queries of every kind), the median of InfraWatch's
time over Prometheus' within 1.0x. Steps sit 5 s off the samples so no window edge lands on a
sample (Prometheus 2.42 closes windows on the left, Prometheus 3 and InfraWatch do not).

Prints one JSON object (also written to bench-promql.json).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import cramjam
import grpc

from bench.__main__ import (
    COMPACTION_DELAY_MS,
    COMPACTION_WINDOW_MS,
    INTERVAL_MS,
    SAMPLES_PER_SERIES,
    analyze,
    build_batches,
    wait_for_compaction,
)
from bench.platform import add_platform_options, loader_token, report, running_platform
from infrawatch.metrics.v1 import metrics_pb2_grpc
from infrawatch.metrics.v1 import remote_write_pb2 as wire
from services.processes import free_port

WARM_UP = 3
TARGETS = {
    # name: (query, step s, target p50 ms)
    "raw_series": ('cpu_usage_percent{instance="host-042"}', 10, 1.0),
    "avg_avg_over_time": ("avg(avg_over_time(cpu_usage_percent[5m]))", 300, 2.0),
    "sum_rate": ("sum(rate(net_rx_bytes_total[5m]))", 60, 3.0),
    "rate_100_series": ("rate(net_rx_bytes_total[5m])", 60, 12.0),
}
MIX = (
    'mem_used_bytes{instance="host-007"}',
    "load1 > 2",
    "sum by (instance) (rate(disk_read_bytes_total[5m]))",
    "max_over_time(cpu_usage_percent[10m])",
    "min_over_time(fs_free_bytes[15m])",
    "quantile_over_time(0.9, load1[10m])",
    "increase(net_tx_bytes_total[1h])",
    "irate(net_rx_bytes_total[1m])",
    "deriv(fs_free_bytes[30m])",
    "predict_linear(fs_free_bytes[1h], 4 * 3600) < 0",
    "topk(5, rate(net_rx_bytes_total[5m]))",  # not a rounded gauge: ties are picked by storage order
    "bottomk(3, deriv(load5[10m]))",
    "quantile(0.95, cpu_usage_percent)",
    "stddev(load1)",
    "count(cpu_usage_percent > 50)",
    "avg by (instance) (cpu_usage_percent) / on (instance) max by (instance) (load1)",
    "cpu_usage_percent / on (instance) group_left load1",
    'label_replace(load1, "h", "$1", "instance", "host-(.*)")',
    "abs(delta(cpu_usage_percent[5m]))",
    "changes(procs_running[15m])",
    "resets(disk_written_bytes_total[30m])",
    "round(cpu_usage_percent, 5)",
    "clamp(cpu_usage_percent, 10, 90)",
    "sum by (instance) (rate(net_rx_bytes_total[5m])) * 8",
    "rate(net_rx_bytes_total[5m]) or rate(net_tx_bytes_total[5m])",
    "load1 and load5 > 1",
    "absent(nonexistent_metric)",
    "max_over_time(cpu_usage_percent[1h:1m])",
    "avg_over_time(rate(net_rx_bytes_total[5m] offset 5s)[30m:1m])",  # inner windows off the samples
    "count_over_time(load1[5m])",
    "sum_over_time(procs_running[5m])",
    "last_over_time(mem_used_bytes[5m])",
    "stddev_over_time(load1[10m])",
    "timestamp(load1)",
    "sgn(deriv(load1[5m]))",
    "sum(mem_used_bytes) / count(mem_used_bytes)",
    "max by (instance) (rate(disk_written_bytes_total[5m]) + rate(disk_read_bytes_total[5m]))",
    'histogram_quantile(0.9, sum by (le) (label_replace(load1, "le", "$1", "instance", "host-0(.)..")))',
    "avg(load1 offset 10m)",
    "1 - avg by (instance) (fs_free_bytes / mem_used_bytes)",
)


def log(message: str) -> None:
    print(f"bench-promql: {message}", file=sys.stderr, flush=True)


class PrometheusServer:
    """Debian's Prometheus with its remote-write receiver on, scraping nothing."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise SystemExit("bench-promql: needs Debian's prometheus (apt-get install -y prometheus)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "prometheus.yml").write_text("global:\n  evaluation_interval: 1m\n")
        self.log = workdir / "prometheus.log"
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                "--storage.tsdb.retention.time=30d",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-remote-write-receiver",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    failure = self.log.read_text()[-2000:]
                    raise SystemExit(f"bench-promql: Prometheus did not start:\n{failure}") from None
                time.sleep(0.2)

    def write(self, series: list[tuple[list[tuple[str, str]], list[tuple[int, float]]]]) -> None:
        request = wire.PromWriteRequest(
            timeseries=[
                wire.PromTimeSeries(
                    labels=[wire.PromLabel(name=k, value=v) for k, v in labels],
                    samples=[wire.PromSample(timestamp=t, value=v) for t, v in points],
                )
                for labels, points in series
            ]
        )
        body = bytes(cramjam.snappy.compress_raw(request.SerializeToString()))
        sent = urllib.request.Request(
            f"{self.url}/api/v1/write",
            data=body,
            method="POST",
            headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"},
        )
        with urllib.request.urlopen(sent, timeout=120) as reply:
            assert reply.status in (200, 204)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


class Client:
    """One kept-alive HTTP connection, as a Grafana data source holds one."""

    def __init__(self, base: str) -> None:
        parsed = urllib.parse.urlsplit(base)
        self.connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=60)

    def range_query(self, expr: str, start_s: float, end_s: float, step_s: float) -> tuple[float, dict]:
        path = "/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": expr, "start": start_s, "end": end_s, "step": step_s}
        )
        began = time.perf_counter()
        self.connection.request("GET", path)
        reply = self.connection.getresponse()
        body = reply.read()
        elapsed_ms = (time.perf_counter() - began) * 1000
        answer = json.loads(body)
        if reply.status != 200:
            raise RuntimeError(f"{expr!r} answered {reply.status}: {answer}")
        return elapsed_ms, answer


def same_answer(a: dict, b: dict) -> bool:
    def keyed(answer: dict) -> dict[tuple, list]:
        return {tuple(sorted(s["metric"].items())): s["values"] for s in answer["data"]["result"]}

    left, right = keyed(a), keyed(b)
    if left.keys() != right.keys():
        return False
    for key, values in left.items():
        other = right[key]
        if [t for t, _ in values] != [t for t, _ in other]:
            return False
        for (_, x), (_, y) in zip(values, other, strict=True):
            fx, fy = float(x), float(y)
            if not (fx == fy or (math.isnan(fx) and math.isnan(fy)) or abs(fx - fy) <= 1e-9 * max(abs(fx), abs(fy))):
                return False
    return True


def timed(client: Client, expr: str, window: tuple[float, float], step_s: float, runs: int) -> tuple[float, dict]:
    answer: dict = {}
    for _ in range(WARM_UP):
        _, answer = client.range_query(expr, *window, step_s)
    latencies = [client.range_query(expr, *window, step_s)[0] for _ in range(runs)]
    return statistics.median(latencies), answer


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.promql", description=__doc__.split("\n\n")[0])
    add_platform_options(parser, "bench-promql.json")
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each query (after 3 untimed)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="infrawatch-bench-promql-"))
    # No maintenance pass while the fresh chunks are measured (the default schedule would compact
    # them halfway through); the restart afterwards turns it on.
    with running_platform(args.backend, args.postgres_url, env={"INFRAWATCH_MAINTENANCE_EVERY": "1h"}) as platform:
        prometheus = PrometheusServer(workdir)
        try:
            return measure(args, platform, prometheus)
        finally:
            prometheus.stop()


def measure(args: argparse.Namespace, platform, prometheus: PrometheusServer) -> int:
    # As `make bench`: the data end before the newest window compaction may rewrite, so "compacted"
    # covers every sample.
    now_ms = int(time.time() * 1000)
    end_ms = (now_ms - COMPACTION_DELAY_MS) // COMPACTION_WINDOW_MS * COMPACTION_WINDOW_MS - INTERVAL_MS
    start_ms = end_ms - (SAMPLES_PER_SERIES - 1) * INTERVAL_MS
    batches = build_batches(start_ms)
    total = sum(len(s.values) for b in batches for s in b.series)
    log(f"streaming {total:,} samples into InfraWatch ({args.backend})")
    token = loader_token(platform)
    with grpc.insecure_channel(
        platform.metrics_address, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        acks = metrics_pb2_grpc.MetricsServiceStub(channel).StreamMetrics(
            iter(batches), metadata=(("authorization", f"Bearer {token}"),), timeout=600
        )
        accepted = sum(ack.samples_accepted for ack in acks)
    if accepted != total:
        raise RuntimeError(f"InfraWatch accepted {accepted} of {total} samples")
    analyze(args, platform.schema)  # planner statistics, as autovacuum gathers soon after a load

    infrawatch_api = f"http://127.0.0.1:{platform.env['INFRAWATCH_PROM_PORT']}"
    with urllib.request.urlopen(
        f"{infrawatch_api}/api/v1/series?" + urllib.parse.urlencode({"match[]": '{__name__=~".+"}'}), timeout=60
    ) as reply:
        stored = json.load(reply)["data"]
    by_ref: dict[int, list[tuple[str, str]]] = {}
    named = {(s["__name__"], s["instance"]): sorted(s.items()) for s in stored}
    for entry in batches[0].series:
        labels = {label.name: label.value for label in entry.labels}
        by_ref[entry.ref] = named[(labels["__name__"], labels["instance"])]
    log(f"writing the same {len(by_ref)} series to Prometheus in time order")
    for first in range(0, len(batches), 6):  # 10-minute slices: Prometheus' head takes them in order
        series: dict[int, list[tuple[int, float]]] = {}
        for batch in batches[first : first + 6]:
            for entry in batch.series:
                points = series.setdefault(entry.ref, [])
                points.extend((entry.start_ms + i * entry.interval_ms, v) for i, v in enumerate(entry.values))
        prometheus.write([(by_ref[ref], points) for ref, points in series.items()])

    window = ((start_ms + 5_000) / 1000, (end_ms + 5_000) / 1000)
    theirs = Client(prometheus.url)
    log("queries on the freshly ingested chunks")
    fresh = compare(Client(infrawatch_api), theirs, window, args.runs)
    log("restarting the metrics service with a maintenance pass every 2s, waiting for compaction")
    platform.restart_metrics({"INFRAWATCH_MAINTENANCE_EVERY": "2s"})
    wait_for_compaction(args, platform.schema, platform.workdir)
    compacted = compare(Client(infrawatch_api), theirs, window, args.runs)
    report(
        {
            "backend": args.backend,
            "samples": total,
            "series": len(by_ref),
            "runs": args.runs,
            "mix_queries": len(MIX),
            "differing": sorted(set(fresh.pop("differing")) | set(compacted.pop("differing"))),
            "compacted": compacted,
            "fresh": fresh,
        },
        args.output,
    )
    return 0


def compare(ours: Client, theirs: Client, window: tuple[float, float], runs: int) -> dict:
    """Every target and mix query on both servers: p50s, ratios, and which answers differ."""
    differing: list[str] = []
    targets = {}
    for name, (expr, step_s, goal_ms) in TARGETS.items():
        log(f"target {name}: {expr}")
        our_ms, our_answer = timed(ours, expr, window, step_s, runs)
        their_ms, their_answer = timed(theirs, expr, window, step_s, runs)
        if not same_answer(our_answer, their_answer):
            differing.append(expr)
        targets[name] = {
            "query": expr,
            "step_s": step_s,
            "infrawatch_p50_ms": round(our_ms, 2),
            "prometheus_p50_ms": round(their_ms, 2),
            "target_ms": goal_ms,
            "met": our_ms <= goal_ms,
        }
    ratios = []
    mix = []
    log(f"the mix: {len(MIX)} queries at 60 s steps")
    for expr in MIX:
        our_ms, our_answer = timed(ours, expr, window, 60, runs)
        their_ms, their_answer = timed(theirs, expr, window, 60, runs)
        if not same_answer(our_answer, their_answer):
            differing.append(expr)
        ratios.append(our_ms / their_ms)
        mix.append({"query": expr, "infrawatch_p50_ms": round(our_ms, 2), "prometheus_p50_ms": round(their_ms, 2)})
    ordered = sorted(ratios)
    return {
        "targets": targets,
        "mix_median_ratio": round(statistics.median(ratios), 2),
        "mix_p90_ratio": round(ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)], 2),
        "mix_target_ratio": 1.0,
        "mix_met": statistics.median(ratios) <= 1.0,
        "differing": differing,
        "mix": mix,
    }


if __name__ == "__main__":
    sys.exit(main())
