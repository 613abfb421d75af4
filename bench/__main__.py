"""`make bench`: the metrics ingest and query benchmark, through the real gRPC path.

Starts the agents and metrics services as real processes on a fresh
PostgreSQL schema (or SQLite with --backend sqlite), streams 1,000,000
samples (100 hosts x 10 metrics x 1,000 samples at 10 s, as 100 batches of
10,000 samples on one stream) with values shaped like an exporter's (gauges
rounded as node_exporter and the agent report them, byte counts in whole
pages, integer counters), ending in the last compaction window that has
closed, so "after compaction" means every window was compacted; runs the two
reference queries 100 times each (after 5 untimed), measures a plain psycopg2
COPY baseline on the same PostgreSQL, and prints one JSON object (also written to bench.json).
"""

from __future__ import annotations

import argparse
import io
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil
import psycopg2
from google.protobuf.duration_pb2 import Duration

from bench.platform import (
    Platform,
    add_platform_options,
    loader_token,
    percentile,
    postgres_cpu_s,
    report,
    running_platform,
)
from infrawatch.metrics.v1 import metrics_pb2 as pb
from infrawatch.metrics.v1 import metrics_pb2_grpc
from services.common.timestamps import to_timestamp

HOSTS = 100
GAUGES = ("cpu_usage_percent", "mem_used_bytes", "load1", "load5", "fs_free_bytes", "procs_running")
COUNTERS = ("disk_read_bytes_total", "disk_written_bytes_total", "net_rx_bytes_total", "net_tx_bytes_total")
SAMPLES_PER_SERIES = 1000
INTERVAL_MS = 10_000
SCRAPES_PER_BATCH = 10
QUERY_RUNS = 100
WARM_UP_RUNS = 5
"""Queries first run untimed on a new connection: what a dashboard that refreshes sees is the rest."""
COMPACTION_WINDOW_MS = 3_600_000
COMPACTION_DELAY_MS = 600_000


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


PAGE = 4096


def _first_value(name: str, rng: random.Random) -> float:
    if name in ("mem_used_bytes", "fs_free_bytes"):
        return float(rng.randrange(1 << 18, 1 << 21) * PAGE)
    if name in COUNTERS:
        return float(rng.randrange(1 << 20, 1 << 40))
    return round(rng.uniform(0, 50), 1)


def _next_value(name: str, value: float, rng: random.Random) -> float:
    """One scrape later, rounded as exporters report each kind of value."""
    if name == "cpu_usage_percent":
        return round(min(100.0, max(0.0, value + rng.gauss(0, 3))), 1)
    if name in ("load1", "load5"):
        return round(max(0.0, value + rng.gauss(0, 0.2)), 2)
    if name == "procs_running":
        return float(rng.randint(0, 8))
    if name in ("mem_used_bytes", "fs_free_bytes"):
        return value + round(rng.gauss(0, 200)) * PAGE
    if name.startswith("disk_"):
        return value + rng.randint(0, 400) * PAGE  # block devices count whole pages
    return value + rng.randint(0, 200_000)  # network bytes: any integer


def build_batches(start_ms: int, seed: int = 42) -> list[pb.MetricBatch]:
    """The workload, built before timing starts: label sets sent once with refs, then refs only."""
    rng = random.Random(seed)
    names = [*GAUGES, *COUNTERS]
    keys = [(host, name) for host in range(HOSTS) for name in names]
    level = {key: _first_value(key[1], rng) for key in keys}
    batches = []
    for number in range(SAMPLES_PER_SERIES // SCRAPES_PER_BATCH):
        batch = pb.MetricBatch(sequence=number + 1)
        if number == 0:
            batch.metadata.extend(
                [pb.MetricMetadata(name=n, type=pb.METRIC_TYPE_GAUGE) for n in GAUGES]
                + [pb.MetricMetadata(name=n, type=pb.METRIC_TYPE_COUNTER, unit="bytes") for n in COUNTERS]
            )
        first = start_ms + number * SCRAPES_PER_BATCH * INTERVAL_MS
        times = [first + i * INTERVAL_MS for i in range(SCRAPES_PER_BATCH)]
        for ref, key in enumerate(keys, start=1):
            host, name = key
            values = []
            for _ in times:
                level[key] = _next_value(key[1], level[key], rng)
                values.append(level[key])
            # Evenly spaced, so sent as the InfraWatch agent sends it: start and interval, no timestamp list.
            entry = batch.series.add(ref=ref, start_ms=times[0], interval_ms=INTERVAL_MS, values=values)
            if number == 0:
                # One stream writes all 100 hosts' series, so they are told apart by `instance`: the
                # server sets `host` itself, from the stream's credential.
                entry.labels.extend(
                    [pb.Label(name="__name__", value=name), pb.Label(name="instance", value=f"host-{host:03d}")]
                )
        batches.append(batch)
    return batches


def store_size(args: argparse.Namespace, schema: str, workdir: Path) -> tuple[int, int]:
    """(chunk rows, bytes on disk of the chunk tables — fresh, recent and packed — and their indexes)."""
    if args.backend == "sqlite":
        import sqlite3

        with sqlite3.connect(workdir / "metrics.db") as connection:
            rows = connection.execute("SELECT count(*) FROM stored_chunks").fetchone()[0]
            size = connection.execute("SELECT sum(pgsize) FROM dbstat WHERE name LIKE '%chunks%'").fetchone()[0]
        return int(rows), int(size)
    connection = psycopg2.connect(args.postgres_url, options=f"-csearch_path={schema}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM stored_chunks")
        rows = cursor.fetchone()[0]
        cursor.execute(
            "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
            "WHERE inhparent IN ('chunks'::regclass, 'recent_chunks'::regclass, 'fresh_chunks'::regclass)"
        )
        size = cursor.fetchone()[0]
    connection.close()
    return int(rows), int(size)


def wait_for_compaction(args: argparse.Namespace, schema: str, workdir: Path, timeout_s: float = 120) -> None:
    """Until the chunk count stops falling for a few passes. Nothing is vacuumed by hand: the
    emptied fresh partitions are dropped by the service itself, so the size is what a user sees."""
    deadline = time.monotonic() + timeout_s
    previous, stable = -1, 0
    while time.monotonic() < deadline and stable < 3:
        time.sleep(2)
        rows, _ = store_size(args, schema, workdir)
        stable = stable + 1 if rows == previous else 0
        previous = rows
        log(f"chunks: {rows}")
    analyze(args, schema)


def analyze(args: argparse.Namespace, schema: str) -> None:
    """Gather planner statistics, as autovacuum would soon after a load, so queries run with the
    plans they get in steady state."""
    if args.backend != "postgres":
        return
    connection = psycopg2.connect(args.postgres_url, options=f"-csearch_path={schema}")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    connection.close()


def timed_queries(stub: metrics_pb2_grpc.MetricsServiceStub, request: pb.QueryRangeRequest, check) -> list[float]:
    for _ in range(WARM_UP_RUNS):
        check(stub.QueryRange(request, timeout=30))
    latencies = []
    for _ in range(QUERY_RUNS):
        began = time.perf_counter()
        reply = stub.QueryRange(request, timeout=30)
        latencies.append((time.perf_counter() - began) * 1000)
        check(reply)
    return latencies


def baseline_copy(postgres_url: str, schema: str, batches: list[pb.MetricBatch]) -> float:
    """Plain psycopg2 COPY of the same samples, one row per sample, into an indexed table."""
    rows = io.StringIO()
    for batch in batches:
        for series in batch.series:
            for i, v in enumerate(series.values):
                rows.write(f"{series.ref}\t{series.start_ms + i * series.interval_ms}\t{v!r}\n")
    connection = psycopg2.connect(postgres_url, options=f"-csearch_path={schema}")
    with connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE baseline_samples (series_id integer, ts bigint, value double precision)")
        cursor.execute("CREATE INDEX ON baseline_samples (series_id, ts)")
    rows.seek(0)
    began = time.perf_counter()
    with connection, connection.cursor() as cursor:
        cursor.copy_from(rows, "baseline_samples")
    elapsed = time.perf_counter() - began
    connection.close()
    return SAMPLES_PER_SERIES * HOSTS * len(GAUGES + COUNTERS) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    add_platform_options(parser, "bench.json")
    parser.add_argument("--keep-schema", action="store_true", help="leave the benchmark schema for inspection")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="record the metrics service with py-spy during ingest (collapsed stacks, for flame graphs)",
    )
    args = parser.parse_args()

    # No background pass during the ingest measurement; compaction is measured on its own below.
    quiet = {"INFRAWATCH_MAINTENANCE_EVERY": "1h"}
    with running_platform(args.backend, args.postgres_url, quiet, keep_schema=args.keep_schema) as platform:
        return measure_all(args, platform)


def measure_all(args: argparse.Namespace, platform: Platform) -> int:
    schema, workdir = platform.schema, platform.workdir
    server = psutil.Process(platform.metrics.process.pid)
    log(f"services up on {args.backend}; building the workload")
    # The data ends before the newest window that compaction may already rewrite (1 h windows,
    # closed 10 min after their end), so the compacted figures cover every sample.
    now_ms = int(time.time() * 1000)
    end_ms = (now_ms - COMPACTION_DELAY_MS) // COMPACTION_WINDOW_MS * COMPACTION_WINDOW_MS - INTERVAL_MS
    start_ms = end_ms - (SAMPLES_PER_SERIES - 1) * INTERVAL_MS
    batches = build_batches(start_ms)
    total = sum(len(s.values) for b in batches for s in b.series)

    token = loader_token(platform)
    channel = grpc.insecure_channel(platform.metrics_address, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = metrics_pb2_grpc.MetricsServiceStub(channel)
    rss_start = server.memory_info().rss / 2**20
    cpu_before = sum(server.cpu_times()[:2])
    postgres_before = postgres_cpu_s()
    client_before = sum(psutil.Process().cpu_times()[:2])
    rss_peak = rss_start
    profiler = None
    if args.profile:
        py_spy = Path(sys.executable).parent / "py-spy"
        profiler = subprocess.Popen(
            [
                str(py_spy),
                "record",
                "--format",
                "raw",
                "--rate",
                "250",
                "--output",
                args.profile,
                "--pid",
                str(platform.metrics.process.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
    log(f"streaming {total:,} samples in {len(batches)} batches")
    began = time.perf_counter()
    accepted = 0
    acks = stub.StreamMetrics(iter(batches), metadata=(("authorization", f"Bearer {token}"),), timeout=600)
    for ack in acks:
        accepted += ack.samples_accepted
        if ack.samples_rejected:
            raise RuntimeError(f"batch {ack.sequence} had rejections: {ack.rejections[:3]}")
        if ack.sequence % 10 == 0:
            rss_peak = max(rss_peak, server.memory_info().rss / 2**20)
            log(f"acked batch {ack.sequence}/{len(batches)}")
    ingest_s = time.perf_counter() - began
    server_cpu = sum(server.cpu_times()[:2]) - cpu_before
    postgres_cpu = postgres_cpu_s() - postgres_before
    client_cpu = sum(psutil.Process().cpu_times()[:2]) - client_before
    rss_end = server.memory_info().rss / 2**20
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(30)
        log(f"profile written to {args.profile}")
    if accepted != total:
        raise RuntimeError(f"only {accepted} of {total} samples were accepted")

    step = Duration()
    step.FromSeconds(300)
    single = pb.QueryRangeRequest(
        selector=pb.Selector(selector='cpu_usage_percent{instance="host-042"}'),
        start=to_timestamp(start_ms),
        end=to_timestamp(end_ms),
    )
    fleet = pb.QueryRangeRequest(
        selector=pb.Selector(selector="cpu_usage_percent"),
        start=to_timestamp(start_ms),
        end=to_timestamp(end_ms),
        step=step,
        aggregation=pb.AGGREGATION_AVG,
    )

    def check_single(reply: pb.QueryRangeResponse) -> None:
        assert len(reply.series) == 1 and len(reply.series[0].values) == SAMPLES_PER_SERIES

    def check_fleet(reply: pb.QueryRangeResponse) -> None:
        expected = (end_ms - start_ms) // 300_000 + 1
        assert len(reply.series) == 1 and len(reply.series[0].values) == expected

    def measure() -> dict[str, float]:
        single_ms = timed_queries(stub, single, check_single)
        fleet_ms = timed_queries(stub, fleet, check_fleet)
        chunks, size = store_size(args, schema, workdir)
        return {
            "chunks": chunks,
            "bytes_per_sample": round(size / total, 2),
            "query_single_p50_ms": round(statistics.median(single_ms), 2),
            "query_single_p99_ms": round(percentile(single_ms, 0.99), 2),
            "query_fleet_avg_p50_ms": round(statistics.median(fleet_ms), 2),
            "query_fleet_avg_p99_ms": round(percentile(fleet_ms, 0.99), 2),
        }

    analyze(args, schema)
    log("running queries on the freshly ingested chunks")
    fresh = measure()
    channel.close()
    if args.keep_schema and args.backend == "postgres":
        with psycopg2.connect(args.postgres_url) as keep, keep.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {schema}.chunks_before_compaction AS SELECT * FROM {schema}.stored_chunks")
    log("restarting the metrics service with a maintenance pass every 2s, waiting for compaction")
    platform.restart_metrics({"INFRAWATCH_MAINTENANCE_EVERY": "2s"})
    wait_for_compaction(args, schema, workdir)
    channel = grpc.insecure_channel(platform.metrics_address)
    stub = metrics_pb2_grpc.MetricsServiceStub(channel)
    compacted = measure()
    channel.close()
    baseline = None
    if args.backend == "postgres":
        log("measuring the COPY baseline")
        baseline = baseline_copy(args.postgres_url, schema, batches)

    result = {
        "backend": args.backend,
        "samples": total,
        "ingest_samples_per_s": round(total / ingest_s),
        "ingest_seconds": round(ingest_s, 3),
        "server_cpu_s": round(server_cpu, 3),
        "server_cpu_us_per_sample": round(server_cpu / total * 1e6, 3),
        "postgres_cpu_s": round(postgres_cpu, 3) if args.backend == "postgres" else None,
        "client_cpu_s": round(client_cpu, 3),
        "bytes_per_sample_compacted": compacted["bytes_per_sample"],
        "bytes_per_sample_fresh": fresh["bytes_per_sample"],
        **{key: value for key, value in compacted.items() if key not in ("chunks", "bytes_per_sample")},
        "server_rss_mb_start": round(rss_start, 1),
        "server_rss_mb_peak": round(rss_peak, 1),
        "server_rss_mb_end": round(rss_end, 1),
        "baseline_copy_samples_per_s": round(baseline) if baseline else None,
        "ingest_vs_baseline": round(total / ingest_s / baseline, 2) if baseline else None,
        "chunks_after_compaction": compacted["chunks"],
        "before_compaction": fresh,
    }
    report(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
