"""`python -m bench.idle ADDRESS TOKEN COUNT SECONDS`: hold COUNT open StreamMetrics streams that
send nothing, 100 per connection, for SECONDS; prints "ready" once every stream is open. The fleet
benchmark runs it as its own process, as idle hosts are separate machines."""

from __future__ import annotations

import asyncio
import math
import sys

import grpc

from infrawatch.metrics.v1 import metrics_pb2_grpc

PER_CONNECTION = 100


async def hold(address: str, token: str, count: int, seconds: float) -> None:
    connections = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(math.ceil(count / PER_CONNECTION))
    ]
    metadata = (("authorization", f"Bearer {token}"),)
    calls = [
        metrics_pb2_grpc.MetricsServiceStub(connections[n // PER_CONNECTION]).StreamMetrics(metadata=metadata)
        for n in range(count)
    ]
    for connection in connections:
        await connection.channel_ready()
    print("ready", flush=True)
    await asyncio.sleep(seconds)
    for call in calls:
        call.cancel()
    for connection in connections:
        await connection.close(None)


if __name__ == "__main__":
    address, token, count, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    asyncio.run(hold(address, token, count, seconds))
