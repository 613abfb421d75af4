"""`make bench-remote-write`: Prometheus remote-write into the metrics service, over real HTTP.

The workload is what a Prometheus server sends: SERIES series with node_exporter-like labels,
one sample per series per scrape round, cut into requests of BATCH time series with one sample
each (Prometheus' max_samples_per_send is 500 in 2.x, 2000 in 3.x), snappy-compressed protobuf,
sent by SHARDS concurrent connections (Prometheus' queue shards). The first round (every series
new: label sets parsed, series created) is sent and timed on its own; then ROUNDS steady rounds
are timed. Request bodies are built before the clock starts, so the client's protobuf and snappy
work is not counted against the server (it still shares the machine's cores).

Prints one JSON object: samples per second (steady and first round), request latency p50/p99,
errors, the samples the service counted as accepted (from its own telemetry), and CPU per sample
of the metrics process and of PostgreSQL.
"""

from __future__ import annotations

import argparse
import http.client
import random
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import cramjam
import grpc
import psutil

from bench.platform import add_platform_options, percentile, postgres_cpu_s, report, running_platform
from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from infrawatch.metrics.v1 import remote_write_pb2 as wire

OPERATOR_TOKEN = "bench-operator-token"
SCRAPE_INTERVAL_MS = 15_000


def log(message: str) -> None:
    print(f"bench-remote-write: {message}", file=sys.stderr, flush=True)


def label_sets(count: int) -> list[list[wire.PromLabel]]:
    """node_exporter-like series: 100 per target, 7 labels each."""
    names = ["node_cpu_seconds_total", "node_memory_bytes", "node_network_receive_bytes_total", "node_disk_io_total"]
    sets = []
    for index in range(count):
        target, within = divmod(index, 100)
        labels = {
            "__name__": names[within % len(names)],
            "instance": f"10.0.{target // 250}.{target % 250}:9100",
            "job": "node",
            "cpu": str(within // len(names)),
            "mode": ("user", "system", "idle", "iowait")[within % 4],
            "datacenter": f"dc-{target % 3}",
            "env": "prod",
        }
        sets.append([wire.PromLabel(name=k, value=v) for k, v in sorted(labels.items())])
    return sets


def bodies(
    sets: list[list[wire.PromLabel]], round_ms: int, batch: int, rng: random.Random, per_series: int = 1
) -> list[bytes]:
    """One round as compressed WriteRequests of `batch` samples each: `per_series` consecutive
    scrapes of every series (1 is what Prometheus sends while it keeps up; more when it catches up
    or batches, as vmagent does)."""
    out = []
    series_per_request = max(1, batch // per_series)
    for start in range(0, len(sets), series_per_request):
        request = wire.PromWriteRequest(
            timeseries=[
                wire.PromTimeSeries(
                    labels=labels,
                    samples=[
                        wire.PromSample(value=float(rng.randint(0, 10**6)), timestamp=round_ms + i * SCRAPE_INTERVAL_MS)
                        for i in range(per_series)
                    ],
                )
                for labels in sets[start : start + series_per_request]
            ]
        )
        out.append(bytes(cramjam.snappy.compress_raw(request.SerializeToString())))
    return out


class Sender:
    """SHARDS keep-alive connections posting bodies; collects latencies and errors."""

    def __init__(self, address: str, token: str, shards: int) -> None:
        self._host, self._port = address.split(":")
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        }
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(shards)
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = http.client.HTTPConnection(self._host, int(self._port), timeout=120)
        return connection

    def _post(self, body: bytes) -> None:
        began = time.perf_counter()
        connection = self._connection()
        try:
            connection.request("POST", "/api/v1/write", body=body, headers=self._headers)
            reply = connection.getresponse()
            text = reply.read()
        except OSError as exc:
            self._local.connection = None
            self.errors.append(str(exc))
            return
        if reply.status != 204:
            self.errors.append(f"{reply.status}: {text[:200]!r}")
        self.latencies.append(time.perf_counter() - began)

    def send(self, round_bodies: list[bytes]) -> float:
        began = time.perf_counter()
        list(self._pool.map(self._post, round_bodies))
        return time.perf_counter() - began


def accepted_samples(telemetry_port: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{telemetry_port}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith('infrawatch_ingest_samples_total{outcome="accepted"}'):
                return float(line.split()[-1])
    return 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.remote_write", description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100_000, help="series per scrape round")
    parser.add_argument("--rounds", type=int, default=10, help="steady scrape rounds timed after the first")
    parser.add_argument("--batch", type=int, default=2000, help="samples per request")
    parser.add_argument(
        "--samples-per-series",
        type=int,
        default=1,
        help="consecutive samples of each series in a request (1: Prometheus keeping up; 10: the batched shape)",
    )
    parser.add_argument(
        "--shards", type=int, default=16, help="concurrent connections (Prometheus scales shards up to 200 under load)"
    )
    add_platform_options(parser, "bench-remote-write.json")
    args = parser.parse_args(argv)

    env = {"INFRAWATCH_OPERATOR_TOKEN": OPERATOR_TOKEN}
    with running_platform(args.backend, args.postgres_url, env) as platform:
        with grpc.insecure_channel(platform.agents_address) as channel:
            created = agents_pb2_grpc.AgentServiceStub(channel).CreateRemoteWriteCredential(
                agents_pb2.CreateRemoteWriteCredentialRequest(name="bench"),
                metadata=(("authorization", f"Bearer {OPERATOR_TOKEN}"),),
                timeout=10,
            )
        rng = random.Random(1)
        sets = label_sets(args.series)
        per = args.samples_per_series
        round_span = per * SCRAPE_INTERVAL_MS
        first_ms = int(time.time() * 1000) - (args.rounds + 2) * round_span
        log(f"building {args.rounds + 1} rounds of {args.series} x {per} samples in requests of {args.batch}")
        rounds = [bodies(sets, first_ms + r * round_span, args.batch, rng, per) for r in range(args.rounds + 1)]
        sender = Sender(f"127.0.0.1:{platform.env['INFRAWATCH_PROM_PORT']}", created.token, args.shards)
        server = psutil.Process(platform.metrics.process.pid)

        log("first round: every series new")
        first_s = sender.send(rounds[0])
        first_latencies = list(sender.latencies)
        sender.latencies.clear()
        cpu_before, pg_before = server.cpu_times(), postgres_cpu_s()
        log(f"{args.rounds} steady rounds")
        steady_s = sum(sender.send(round_bodies) for round_bodies in rounds[1:])
        cpu_after, pg_after = server.cpu_times(), postgres_cpu_s()
        steady_samples = args.rounds * args.series * per
        server_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        report(
            {
                "backend": args.backend,
                "series": args.series,
                "samples_per_request": args.batch,
                "samples_per_series": per,
                "shards": args.shards,
                "steady_samples": steady_samples,
                "steady_samples_per_second": round(steady_samples / steady_s),
                "first_round_samples_per_second": round(args.series * per / first_s),
                "request_p50_ms": round(percentile(sender.latencies, 0.5) * 1000, 2),
                "request_p99_ms": round(percentile(sender.latencies, 0.99) * 1000, 2),
                "first_round_request_p99_ms": round(percentile(first_latencies, 0.99) * 1000, 2),
                "errors": len(sender.errors),
                "first_errors": sender.errors[:3],
                "service_accepted_samples": accepted_samples(platform.env["INFRAWATCH_METRICS_TELEMETRY_PORT"]),
                "samples_sent": (args.rounds + 1) * args.series * per,
                "server_cpu_us_per_sample": round(server_cpu / steady_samples * 1e6, 2),
                "postgres_cpu_us_per_sample": round((pg_after - pg_before) / steady_samples * 1e6, 2),
            },
            args.output,
        )


if __name__ == "__main__":
    main()
