"""`make bench-fleet`: a fleet of agents streaming at once, through the real gRPC path.

N simulated agents, each registered as its own host with its own token and stream, send S
series every second (one sample each, as the InfraWatch agent does) for a fixed duration,
while K further streams stay open and idle, and a probe measures health checks and queries
throughout. Prints one JSON object: throughput against what was sent, ack latency, the slowest
agent's first ack, errors, samples lost, and the metrics process's threads and memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import sys
import time

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.platform import ENROLL, add_platform_options, percentile, postgres_cpu_s, report, running_platform
from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2 as pb
from infrawatch.metrics.v1 import metrics_pb2_grpc


def log(message: str) -> None:
    print(f"bench-fleet: {message}", file=sys.stderr, flush=True)


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.acked = 0
        self.errors: list[str] = []
        self.ack_ms: list[float] = []
        self.ack_at: list[float] = []
        self.first_ack_ms: list[float] = []
        self.probe_health_ms: list[float] = []
        self.probe_query_ms: list[float] = []


async def agent(
    number: int, args: argparse.Namespace, channel: grpc.aio.Channel, token: str, tally: Tally, until: float
) -> None:
    hostname = f"fleet-{number:04d}"
    rng = random.Random(number)
    levels = [rng.uniform(0, 100) for _ in range(args.series)]
    call = metrics_pb2_grpc.MetricsServiceStub(channel).StreamMetrics(metadata=(("authorization", f"Bearer {token}"),))
    sent_at: dict[int, float] = {}

    async def read_acks() -> None:
        async for ack in call:
            latency = (time.perf_counter() - sent_at.pop(ack.sequence)) * 1000
            if ack.sequence == 1:  # the agent's first batch: its series are created on the way
                tally.first_ack_ms.append(latency)
            tally.ack_ms.append(latency)
            tally.ack_at.append(time.monotonic())
            tally.acked += ack.samples_accepted
            if ack.samples_rejected:
                tally.errors.append(f"{hostname}: {ack.rejections[0].message}")

    reader = asyncio.create_task(read_acks())
    # Agents start spread over the first interval and keep that phase, as a real fleet's
    # independently started agents do.
    await asyncio.sleep(rng.uniform(0, args.interval))
    started = time.perf_counter()
    sequence = 0
    try:
        while time.monotonic() < until:
            sequence += 1
            now = int(time.time() * 1000)
            batch = pb.MetricBatch(sequence=sequence)
            for index in range(args.series):
                levels[index] += rng.gauss(0, 1)
                series = batch.series.add(ref=index + 1, start_ms=now, values=[levels[index]])
                if sequence == 1:
                    series.labels.add(name="__name__", value="fleet_level")
                    series.labels.add(name="host", value=hostname)
                    series.labels.add(name="series", value=str(index))
            sent_at[sequence] = time.perf_counter()
            await call.write(batch)
            tally.sent += args.series
            next_round = sequence * args.interval
            await asyncio.sleep(max(0.0, next_round - (time.perf_counter() - started)))
        await call.done_writing()
        await asyncio.wait_for(reader, timeout=60)
    except grpc.aio.AioRpcError as exc:
        # The call failed: the reader fails the same way, and the error is counted once, here.
        tally.errors.append(f"{hostname}: {exc.code().name} {exc.details()} after round {sequence}")
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            await reader
    except TimeoutError:
        tally.errors.append(f"{hostname}: no acknowledgement within 60 s of the end")
        reader.cancel()


async def probe(channel: grpc.aio.Channel, tally: Tally, until: float) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    metrics = metrics_pb2_grpc.MetricsServiceStub(channel)
    query = pb.LatestValuesRequest(selector=pb.Selector(selector='fleet_level{host="fleet-0000"}'))
    while time.monotonic() < until:
        for call, request, timings in (
            (health.Check, health_pb2.HealthCheckRequest(), tally.probe_health_ms),
            (metrics.LatestValues, query, tally.probe_query_ms),
        ):
            began = time.perf_counter()
            try:
                await call(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                tally.errors.append(f"probe: {exc.code().name} {exc.details()}")
            timings.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace, agents_address: str, metrics_address: str, server: psutil.Process) -> dict:
    async with grpc.aio.insecure_channel(agents_address) as agents_channel:
        stub = agents_pb2_grpc.AgentServiceStub(agents_channel)
        tokens = []
        for number in range(args.agents + 1):
            reply = await stub.RegisterAgent(
                agents_pb2.RegisterAgentRequest(hostname=f"fleet-{number:04d}", agent_version="bench"),
                timeout=10,
                metadata=ENROLL,
            )
            tokens.append(reply.agent_token)
    log(f"{args.agents} agents registered; streaming for {args.duration:g}s with {args.idle_streams} idle streams")
    tally = Tally()
    rss_start = server.memory_info().rss / 2**20
    threads_max = server.num_threads()

    # A connection per agent, as separate hosts have (a local subchannel pool: otherwise gRPC
    # shares one connection between channels to the same address).
    channels = [
        grpc.aio.insecure_channel(metrics_address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args.agents + 1)
    ]
    holder = None
    if args.idle_streams:
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.idle",
            metrics_address,
            tokens[-1],
            str(args.idle_streams),
            str(args.duration + 30),
            stdout=asyncio.subprocess.PIPE,
        )
        assert holder.stdout is not None
        await asyncio.wait_for(holder.stdout.readline(), timeout=120)
        log(f"{args.idle_streams} idle streams open")
    until = time.monotonic() + args.duration
    tasks = [
        asyncio.create_task(agent(n, args, channels[n % len(channels)], tokens[n], tally, until))
        for n in range(args.agents)
    ]
    tasks.append(asyncio.create_task(probe(channels[-1], tally, until)))
    began, began_monotonic = time.perf_counter(), time.monotonic()
    server_cpu, client_cpu = sum(server.cpu_times()[:2]), sum(psutil.Process().cpu_times()[:2])
    postgres_cpu = postgres_cpu_s()
    while not all(task.done() for task in tasks[:-1]):
        threads_max = max(threads_max, server.num_threads())
        await asyncio.sleep(1)
    elapsed = time.perf_counter() - began
    server_cpu = sum(server.cpu_times()[:2]) - server_cpu
    client_cpu = sum(psutil.Process().cpu_times()[:2]) - client_cpu
    postgres_cpu = postgres_cpu_s() - postgres_cpu
    await asyncio.gather(*tasks, return_exceptions=True)
    if holder is not None:
        holder.terminate()
        await holder.wait()
    for channel in channels:
        await channel.close(None)
    settled = began_monotonic + min(10.0, args.duration / 2)
    steady = [ms for ms, at in zip(tally.ack_ms, tally.ack_at, strict=True) if at >= settled]
    return {
        "agents": args.agents,
        "series_per_agent": args.series,
        "seconds": round(elapsed, 2),
        "acked_samples_per_s": round(tally.acked / elapsed),
        "expected_samples_per_s": round(args.agents * args.series / args.interval),
        "ack_p50_ms": round(percentile(tally.ack_ms, 0.5), 2),
        "ack_p99_ms": round(percentile(tally.ack_ms, 0.99), 2),
        "ack_max_ms": round(max(tally.ack_ms, default=math.nan), 2),
        "first_ack_max_ms": round(max(tally.first_ack_ms, default=math.nan), 2),
        # After the start-up (every agent's series created), as a fleet runs most of the time.
        "steady_ack_p50_ms": round(percentile(steady, 0.5), 2),
        "steady_ack_p99_ms": round(percentile(steady, 0.99), 2),
        "errors": len(tally.errors),
        "error_examples": tally.errors[:5],
        "samples_sent": tally.sent,
        "samples_lost": tally.sent - tally.acked,
        "idle_streams": args.idle_streams,
        "health_p99_ms": round(percentile(tally.probe_health_ms, 0.99), 2),
        "query_p99_ms": round(percentile(tally.probe_query_ms, 0.99), 2),
        "server_threads_max": threads_max,
        "server_cpu_percent": round(server_cpu / elapsed * 100, 1),
        "postgres_cpu_percent": round(postgres_cpu / elapsed * 100, 1),
        "client_cpu_percent": round(client_cpu / elapsed * 100, 1),
        "server_rss_mb_start": round(rss_start, 1),
        "server_rss_mb_end": round(server.memory_info().rss / 2**20, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", "-n", type=int, default=200, help="simulated agents, one stream each (200)")
    parser.add_argument("--series", "-s", type=int, default=100, help="series per agent (100)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between an agent's batches (1)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of streaming (30)")
    parser.add_argument("--idle-streams", type=int, default=0, help="extra streams held open without data (0)")
    add_platform_options(parser, "bench-fleet.json")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for the services (repeatable)"
    )
    args = parser.parse_args()
    env = {
        "INFRAWATCH_MAINTENANCE_EVERY": "1h",
        "INFRAWATCH_MAX_SERIES_PER_AGENT": str(max(args.series, 1000)),
        # The idle streams are held by one token (bench/idle.py), where a fleet has one per agent.
        "INFRAWATCH_MAX_STREAMS_PER_AGENT": str(max(args.idle_streams + 16, 16)),
        **dict(item.split("=", 1) for item in args.env),
    }
    with running_platform(args.backend, args.postgres_url, env) as platform:
        server = psutil.Process(platform.metrics.process.pid)
        result = asyncio.run(run(args, platform.agents_address, platform.metrics_address, server))
    result = {"backend": args.backend, **result}
    report(result, args.output)
    return 0 if result["errors"] == 0 and result["samples_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
