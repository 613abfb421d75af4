"""`make bench-alerts`: how fast the alerts engine evaluates, and how soon a notification follows
the sample that crosses a threshold.

1. Evaluation: agents and metrics run as processes; a fleet of SERIES series (one per `node`)
   holds five minutes of samples; RULES Prometheus-format alerting rules each average that
   metric per node over a window (`avg by (node) (avg_over_time(bench_load[300s])) > 90`),
   QUERIES distinct expressions among them (windows of 300 s, 301 s, ...; rules sharing one
   differ in their labels, as warning/critical pairs do). One evaluation cycle of all rules (in
   parallel on the engine's pool, the distinct expressions asked with InstantQueries of the metrics
   service's PromQL engine through the real gRPC client, in calls of 50) is timed CYCLES times
   after a first cycle, reported on its own.
2. Notification delay (`for: 0`, a 1 s evaluation interval, group_wait 0): a sample crossing the
   threshold is ingested, and the time until the webhook request arrives at a local HTTP
   receiver is measured, ROUNDS times.
Prints one JSON object (also written to bench-alerts.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc

from bench.platform import ENROLL, add_platform_options, percentile, report, running_platform
from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2 as pb
from infrawatch.metrics.v1 import metrics_pb2_grpc
from services.alerts.__main__ import MIGRATIONS, VERSION_TABLE
from services.alerts.app import build_alerts_app
from services.alerts.rules import load_rules
from services.common.clock import wall_clock_ms
from services.common.credentials import Credentials
from services.common.db import create_db_engine, migrate

SERVICE_TOKEN = "bench-service-token"


def log(message: str) -> None:
    print(f"bench-alerts: {message}", file=sys.stderr, flush=True)


def evaluation_rules(count: int, queries: int) -> str:
    """`count` rules over `queries` distinct PromQL expressions (windows of 300 s, 301 s, ...);
    rules sharing an expression differ in their labels."""
    rules = "\n".join(
        f"""      - alert: Load{i:04d}
        expr: avg by (node) (avg_over_time(bench_load[{300 + i % queries}s])) > 90
        labels: {{tier: t{i}}}"""
        for i in range(count)
    )
    return f"groups:\n  - name: bench\n    interval: 1h\n    rules:\n{rules}\n"


def delay_rules(port: int) -> str:
    return f"""groups:
  - name: trigger
    interval: 1s
    rules:
      - alert: Crossed
        expr: last_over_time(bench_trigger[10s]) > 50
notifications:
  receivers: [{{name: hook, webhook_url: "http://127.0.0.1:{port}/hook"}}]
  routes: [{{receiver: hook, group_by: [round], group_wait: 0s, group_interval: 1s}}]
"""


def ingest(stub: metrics_pb2_grpc.MetricsServiceStub, token: str, batches: list[pb.MetricBatch]) -> None:
    for ack in stub.StreamMetrics(iter(batches), metadata=(("authorization", f"Bearer {token}"),), timeout=120):
        assert ack.samples_rejected == 0, ack


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.alerts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=10, help="distinct queries among the rules (10)")
    parser.add_argument("--cycles", type=int, default=5, help="timed cycles after the first (5)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=8, help="the engine's evaluation pool (8, the default)")
    add_platform_options(parser, "bench-alerts.json")
    args = parser.parse_args()
    env = {"INFRAWATCH_MAINTENANCE_EVERY": "1h", "INFRAWATCH_MAX_SERIES_PER_AGENT": str(args.series + 100)}
    with running_platform(args.backend, args.postgres_url, env) as platform:
        agents_channel = grpc.insecure_channel(platform.agents_address)
        metrics_channel = grpc.insecure_channel(platform.metrics_address)
        token = (
            agents_pb2_grpc.AgentServiceStub(agents_channel)
            .RegisterAgent(agents_pb2.RegisterAgentRequest(hostname="bench-alerts"), metadata=ENROLL, timeout=10)
            .agent_token
        )
        stub = metrics_pb2_grpc.MetricsServiceStub(metrics_channel)
        now = int(time.time() * 1000)
        batches: list[pb.MetricBatch] = []
        for first in range(0, args.series, 500):
            batch = pb.MetricBatch(sequence=len(batches) + 1)
            for node in range(first, min(args.series, first + 500)):
                batch.series.add(
                    labels=[pb.Label(name="__name__", value="bench_load"), pb.Label(name="node", value=f"n{node:04d}")],
                    start_ms=now - 290_000,
                    interval_ms=10_000,
                    values=[float((node * 7 + i) % 100) for i in range(30)],
                )
            batches.append(batch)
        ingest(stub, token, batches)
        log(
            f"{args.series} series x 30 samples ingested; evaluating {args.rules} rules "
            f"({args.queries} distinct queries) {args.cycles} times"
        )

        workdir = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
        engine = create_db_engine(f"sqlite:///{workdir / 'alerts.db'}")
        migrate(engine, MIGRATIONS, VERSION_TABLE)
        stop = threading.Event()
        app = build_alerts_app(
            engine,
            metrics_channel,
            agents_channel,
            workdir / "rules.yaml",
            Credentials(service_token=SERVICE_TOKEN),
            now_ms=wall_clock_ms,
            stop=stop,
            downstream_timeout_s=30.0,
            evaluation_workers=args.workers,
            tick_s=0.1,
        )
        alerts = app.engine
        alerts.start_with(load_rules(evaluation_rules(args.rules, args.queries), "bench"))
        started = time.perf_counter()
        alerts.evaluate_all()  # the first cycle after a start also fills the label caches: reported apart
        first_cycle = time.perf_counter() - started
        cycles = []
        for _ in range(args.cycles):
            started = time.perf_counter()
            alerts.evaluate_all()
            cycles.append(time.perf_counter() - started)
        errors = [alerts.health(r.key).error for r in alerts.rules.rules if alerts.health(r.key).error]  # type: ignore[union-attr]
        firing = len(alerts.alerts())
        log(
            f"first cycle {first_cycle:.3f} s, then {[round(c, 3) for c in cycles]} s; "
            f"{firing} alerts; {len(errors)} evaluation errors"
        )

        arrivals: dict[str, float] = {}
        arrived = threading.Condition()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with arrived:
                    for alert in body["alerts"]:
                        if alert["status"] == "firing":
                            arrivals.setdefault(alert["labels"]["round"], time.perf_counter())
                    arrived.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        receiver = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        app.start(load_rules(delay_rules(receiver.server_address[1]), "bench"), stop)
        delays = []
        for number in range(args.rounds):
            batch = pb.MetricBatch(sequence=1)
            batch.series.add(
                labels=[pb.Label(name="__name__", value="bench_trigger"), pb.Label(name="round", value=str(number))],
                timestamps_ms=[int(time.time() * 1000)],
                values=[99.0],
            )
            crossed = time.perf_counter()
            ingest(stub, token, [batch])
            label = str(number)
            with arrived:
                arrived.wait_for(lambda label=label: label in arrivals, timeout=30)  # type: ignore[misc]
            delays.append(arrivals[label] - crossed)
        stop.set()
        app.close()
        receiver.shutdown()
    result = {
        "backend": args.backend,
        "rules": args.rules,
        "series_per_rule": args.series,
        "distinct_queries": args.queries,
        "evaluation_workers": args.workers,
        "first_cycle_s": round(first_cycle, 3),
        "cycle_s": [round(c, 3) for c in cycles],
        "cycle_p50_s": round(percentile(cycles, 0.5), 3),
        "rules_per_s": round(args.rules / percentile(cycles, 0.5)),
        "evaluation_errors": len(errors),
        "alerts_after_evaluation": firing,
        "notification_delay_p50_s": round(percentile(delays, 0.5), 3),
        "notification_delay_p99_s": round(percentile(delays, 0.99), 3),
        "notification_delay_max_s": round(max(delays), 3),
        "evaluation_interval_s": 1.0,
    }
    report(result, args.output)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
