"""`python -m agent.loadgen`: simulate a fleet of agents to size an InfraWatch deployment.

Each simulated agent registers as its own host (`<prefix>-NNN`), holds one StreamMetrics
stream and sends `--series` synthetic series (gauges as random walks, counters monotonic) every
`--interval`, exactly as the real agent does: label sets once per stream, then refs. At the end
it prints one JSON line: samples acknowledged, samples per second, rejections, stream errors.
Loopback or your own test hosts only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from agent.identity import Identity, StateFile
from agent.values import duration_seconds
from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2 as pb
from infrawatch.metrics.v1 import metrics_pb2_grpc


@dataclass
class Totals:
    acked_samples: int = 0
    rejected_samples: int = 0
    stream_errors: int = 0
    registration_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def simulate(
    number: int,
    args: argparse.Namespace,
    agents: grpc.Channel,
    metrics: grpc.Channel,
    totals: Totals,
    stop: threading.Event,
) -> None:
    hostname = f"{args.prefix}-{number:03d}"
    # Each simulated host keeps its identity like a real agent, so a second run re-registers
    # with its current token instead of being refused as another machine claiming the hostname.
    state = StateFile(Path(args.state_dir) / f"{hostname}.json")
    known = state.load()
    try:
        reply = agents_pb2_grpc.AgentServiceStub(agents).RegisterAgent(
            agents_pb2.RegisterAgentRequest(
                hostname=hostname,
                agent_version="loadgen",
                labels={"loadgen": "true"},
                agent_token=known.token if known is not None else "",
            ),
            timeout=10,
            metadata=(("authorization", f"Bearer {args.enrollment_token}"),),
        )
    except grpc.RpcError as exc:
        print(f"loadgen: {hostname} could not register: {exc.code().name}: {exc.details()}", file=sys.stderr)
        with totals.lock:
            totals.registration_errors += 1
        return
    state.save(Identity(reply.agent_id, reply.agent_token, hostname))
    token = reply.agent_token
    rng = random.Random(number)
    levels = [rng.uniform(0, 100) for _ in range(args.series)]

    def batches() -> Iterator[pb.MetricBatch]:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            batch = pb.MetricBatch(sequence=sequence)
            now = int(time.time() * 1000)
            for index in range(args.series):
                counter = index % 2 == 1
                levels[index] += rng.uniform(0, 10) if counter else rng.gauss(0, 1)
                series = batch.series.add(ref=index + 1, start_ms=now, values=[levels[index]])
                if sequence == 1:
                    name = f"loadgen_{'requests_total' if counter else 'level'}"
                    series.labels.extend(
                        [
                            pb.Label(name="__name__", value=name),
                            pb.Label(name="host", value=hostname),
                            pb.Label(name="series", value=str(index)),
                        ]
                    )
            yield batch
            stop.wait(args.interval)

    try:
        for ack in metrics_pb2_grpc.MetricsServiceStub(metrics).StreamMetrics(
            batches(), metadata=(("authorization", f"Bearer {token}"),)
        ):
            with totals.lock:
                totals.acked_samples += ack.samples_accepted
                totals.rejected_samples += ack.samples_rejected
    except grpc.RpcError:
        with totals.lock:
            totals.stream_errors += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents-address", default="localhost:50051")
    parser.add_argument("--metrics-address", default="localhost:50052")
    parser.add_argument("--agents", type=int, default=10, help="simulated agents (default 10)")
    parser.add_argument("--series", type=int, default=100, help="series per agent (default 100)")
    parser.add_argument("--interval", type=duration_seconds, default=1.0, help="e.g. 1s, 500ms (default 1s)")
    parser.add_argument("--duration", type=duration_seconds, default=10.0, help="e.g. 30s, 5m (default 10s)")
    parser.add_argument("--prefix", default="loadgen", help="hostname prefix (default loadgen)")
    parser.add_argument(
        "--enrollment-token",
        default=os.environ.get("INFRAWATCH_AGENT_ENROLLMENT_TOKEN", ""),
        help="the platform's enrolment token (default: $INFRAWATCH_AGENT_ENROLLMENT_TOKEN)",
    )
    parser.add_argument("--state-dir", default="./data/loadgen", help="where the simulated hosts keep their identities")
    args = parser.parse_args(argv)

    stop, totals = threading.Event(), Totals()
    agents, metrics = grpc.insecure_channel(args.agents_address), grpc.insecure_channel(args.metrics_address)
    workers = [
        threading.Thread(target=simulate, args=(n, args, agents, metrics, totals, stop), daemon=True)
        for n in range(args.agents)
    ]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    stop.wait(args.duration)
    stop.set()
    for worker in workers:
        worker.join(30)
    elapsed = time.monotonic() - began
    print(
        json.dumps(
            {
                "agents": args.agents,
                "series": args.agents * args.series,
                "seconds": round(elapsed, 2),
                "acked_samples": totals.acked_samples,
                "acked_samples_per_s": round(totals.acked_samples / elapsed),
                "rejected_samples": totals.rejected_samples,
                "stream_errors": totals.stream_errors,
                "registration_errors": totals.registration_errors,
            }
        )
    )
    failures = totals.stream_errors + totals.rejected_samples + totals.registration_errors
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
