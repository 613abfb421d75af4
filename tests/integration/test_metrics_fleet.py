"""The metrics service holding a fleet's worth of streams: more open streams than the old thread
pool had workers, idle watchers, the stream cap, and re-sends across replicas, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infrawatch.metrics.v1 import metrics_pb2 as pb
from infrawatch.metrics.v1 import metrics_pb2_grpc
from services.common.clock import wall_clock_ms
from services.metrics.app import MetricsConfig
from services.metrics.domain import IngestLimits
from tests.integration.conftest import AS_SERVICE, CREDENTIALS, ENROLL, running_metrics

STREAMS = 100
"""More than the 64 worker threads the synchronous server had: each of those held a thread."""

FLEET_CONFIG = MetricsConfig(
    credentials=CREDENTIALS,
    limits=IngestLimits(max_series_per_agent=10_000),
    catalog_refresh_s=0,
    max_streams_per_agent=STREAMS + 1,  # one token stands for the fleet here
    max_watch_streams_per_caller=STREAMS + 1,
)


def labelled(name: str, host: str, times: list[int], values: list[float], ref: int = 1) -> pb.SeriesSamples:
    return pb.SeriesSamples(
        labels=[pb.Label(name="__name__", value=name), pb.Label(name="node", value=host)],
        ref=ref,
        timestamps_ms=times,
        values=values,
    )


async def _health(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    return int(reply.status)


def test_more_open_streams_than_worker_threads_are_all_served_while_health_and_queries_answer(
    metrics_engine, agents_address, agent_token
):
    metadata = (("authorization", f"Bearer {agent_token}"),)
    now = wall_clock_ms()

    async def scenario(address: str) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = metrics_pb2_grpc.MetricsServiceStub(channel)
            calls = [stub.StreamMetrics(metadata=metadata) for _ in range(STREAMS)]
            # Every stream sends a batch and gets its ack while all of them stay open.
            for number, call in enumerate(calls):
                await call.write(
                    pb.MetricBatch(sequence=1, series=[labelled("fleet_level", f"h{number}", [now], [1.0])])
                )
            acks = await asyncio.wait_for(asyncio.gather(*(call.read() for call in calls)), timeout=20)
            assert [ack.samples_accepted for ack in acks] == [1] * STREAMS
            # With all of them open and idle, health and queries still answer at once.
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
            latest = await stub.LatestValues(
                pb.LatestValuesRequest(selector=pb.Selector(selector="fleet_level")), timeout=2
            )
            assert len(latest.samples) == STREAMS
            # And a new stream is served, not queued behind the open ones.
            late = stub.StreamMetrics(metadata=metadata)
            await late.write(pb.MetricBatch(sequence=7, series=[labelled("fleet_level", "late", [now], [2.0])]))
            assert (await asyncio.wait_for(late.read(), timeout=5)).sequence == 7
            for call in [*calls, late]:
                await call.done_writing()

    with running_metrics(metrics_engine, agents_address, FLEET_CONFIG) as harness:
        asyncio.run(scenario(harness.address))


def test_idle_watchers_do_not_block_health_queries_or_ingest(metrics_engine, agents_address, agent_token):
    metadata = (("authorization", f"Bearer {agent_token}"),)
    now = wall_clock_ms()

    async def scenario(address: str) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = metrics_pb2_grpc.MetricsServiceStub(channel)
            request = pb.WatchMetricsRequest(selector=pb.Selector(selector='watched{node="w"}'))
            watchers = [stub.WatchMetrics(request) for _ in range(STREAMS)]
            await asyncio.wait_for(asyncio.gather(*(w.initial_metadata() for w in watchers)), timeout=20)
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
            ingest = stub.StreamMetrics(metadata=metadata)
            await ingest.write(pb.MetricBatch(sequence=1, series=[labelled("watched", "w", [now], [4.0])]))
            assert (await asyncio.wait_for(ingest.read(), timeout=5)).samples_accepted == 1
            # Every idle watcher wakes up with the committed sample.
            updates = await asyncio.wait_for(asyncio.gather(*(w.read() for w in watchers)), timeout=10)
            assert {u.series[0].values[0] for u in updates} == {4.0}
            await ingest.done_writing()
            for watcher in watchers:
                watcher.cancel()

    with running_metrics(metrics_engine, agents_address, FLEET_CONFIG) as harness:
        asyncio.run(scenario(harness.address))


def test_watchers_cannot_take_the_slots_agents_need_and_each_kind_of_stream_is_capped_per_caller(
    metrics_engine, agents_address, agent_token
):
    agent = (("authorization", f"Bearer {agent_token}"),)
    config = MetricsConfig(
        credentials=CREDENTIALS,
        max_streams=2,
        max_streams_per_agent=1,
        max_watch_streams=3,
        max_watch_streams_per_caller=2,
        catalog_refresh_s=0,
    )

    async def refused(call) -> str:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await asyncio.wait_for(call.read(), timeout=5)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return raised.value.details()

    async def scenario(address: str) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = metrics_pb2_grpc.MetricsServiceStub(channel)
            request = pb.WatchMetricsRequest(selector=pb.Selector(selector="anything"))
            anonymous = [stub.WatchMetrics(request) for _ in range(2)]
            await asyncio.gather(*(w.initial_metadata() for w in anonymous))
            assert "INFRAWATCH_MAX_WATCH_STREAMS_PER_CALLER" in await refused(stub.WatchMetrics(request))
            operator = (("authorization", f"Bearer {CREDENTIALS.operator_token}"),)
            as_operator = stub.WatchMetrics(request, metadata=operator)  # another caller: the last slot
            await as_operator.initial_metadata()
            # The total holds for everyone, the gateway's relay (service token) included.
            assert "(INFRAWATCH_MAX_WATCH_STREAMS)" in await refused(stub.WatchMetrics(request, metadata=AS_SERVICE))

            # Every watch slot is taken; agents stream all the same, one stream per agent here.
            ingest = stub.StreamMetrics(metadata=agent)
            await ingest.write(pb.MetricBatch(sequence=1, series=[labelled("capped", "c", [wall_clock_ms()], [1.0])]))
            assert (await asyncio.wait_for(ingest.read(), timeout=5)).samples_accepted == 1
            assert "INFRAWATCH_MAX_STREAMS_PER_AGENT" in await refused(stub.StreamMetrics(metadata=agent))
            await ingest.done_writing()
            await ingest.wait_for_connection()
            await asyncio.wait_for(ingest.read(), timeout=5)  # the server ended it: its slot is free
            again = stub.StreamMetrics(metadata=agent)
            await again.write(pb.MetricBatch(sequence=2, series=[labelled("capped", "c", [wall_clock_ms()], [2.0])]))
            assert (await asyncio.wait_for(again.read(), timeout=5)).samples_accepted == 1
            await again.done_writing()
            for watcher in [*anonymous, as_operator]:
                watcher.cancel()

    with running_metrics(metrics_engine, agents_address, config) as harness:
        asyncio.run(scenario(harness.address))


def _stream(address: str, token: str, *batches: pb.MetricBatch) -> list[pb.BatchAck]:
    with grpc.insecure_channel(address) as channel:
        stub = metrics_pb2_grpc.MetricsServiceStub(channel)
        return list(stub.StreamMetrics(iter(batches), metadata=(("authorization", f"Bearer {token}"),), timeout=30))


def test_a_batch_resent_to_another_replica_after_compaction_is_not_stored_twice(
    metrics_engine, agents_address, agent_token
):
    window = 3_600_000
    start = (wall_clock_ms() // window - 2) * window  # a closed window, two hours ago
    first = [start + i * 10_000 for i in range(5)]
    second = [start + (5 + i) * 10_000 for i in range(5)]

    def batch(sequence: int, times: list[int]) -> pb.MetricBatch:
        return pb.MetricBatch(
            sequence=sequence, series=[labelled("replicated", "r", times, [float(t % 1000 + 1) for t in times])]
        )

    with (
        running_metrics(metrics_engine, agents_address, FLEET_CONFIG) as replica_a,
        running_metrics(metrics_engine, agents_address, FLEET_CONFIG) as replica_b,
    ):
        # The agent streams to B first (B learns the series' newest timestamp), then moves to A.
        assert _stream(replica_b.address, agent_token, batch(1, first))[0].samples_accepted == 5
        assert _stream(replica_a.address, agent_token, batch(2, second))[0].samples_accepted == 5
        # A's maintenance merges the window's chunks into one.
        assert replica_a.samples.compact(window, start - window, start + window) == 1
        # The agent lost A's ack, reconnects to B and re-sends the batch A already stored.
        (ack,) = _stream(replica_b.address, agent_token, batch(2, second))
        assert (ack.samples_accepted, ack.samples_duplicate, ack.samples_rejected) == (0, 5, 0)
        series_id = replica_a.catalog.series_id(
            (("__name__", "replicated"), ("host", "metrics-test-host"), ("node", "r"))
        )
        stored = replica_a.samples.raw([series_id], start, start + window)[series_id][0]
        assert stored == first + second


def test_the_chunks_table_has_exactly_the_columns_every_statement_names(metrics_engine):
    from sqlalchemy import inspect

    from services.metrics.storage.chunks import CHUNK_COLUMNS, PACKED_COLUMNS

    columns = {column["name"] for column in inspect(metrics_engine).get_columns("chunks")}
    assert columns == {*CHUNK_COLUMNS, *PACKED_COLUMNS[metrics_engine.dialect.name]}


def test_a_watcher_catching_up_gets_its_backlog_in_bounded_messages(metrics_engine, agents_address, agent_token):
    from services.metrics.servicer import WATCH_UPDATES_PER_MESSAGE

    series_count = WATCH_UPDATES_PER_MESSAGE + 500
    now = wall_clock_ms()

    async def scenario(address: str, harness) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = metrics_pb2_grpc.MetricsServiceStub(channel)
            watcher = stub.WatchMetrics(pb.WatchMetricsRequest(selector=pb.Selector(selector="backlog")))
            await watcher.initial_metadata()
            ingest = stub.StreamMetrics(metadata=(("authorization", f"Bearer {agent_token}"),))
            await ingest.write(
                pb.MetricBatch(
                    sequence=1,
                    series=[labelled("backlog", f"h{n}", [now], [float(n)], ref=n + 1) for n in range(series_count)],
                )
            )
            assert (await asyncio.wait_for(ingest.read(), timeout=10)).samples_accepted == series_count
            sizes = []
            while sum(sizes) < series_count:
                sizes.append(len((await asyncio.wait_for(watcher.read(), timeout=10)).series))
            assert max(sizes) <= WATCH_UPDATES_PER_MESSAGE and sum(sizes) == series_count
            await ingest.done_writing()
            watcher.cancel()

    config = MetricsConfig(
        credentials=CREDENTIALS,
        limits=IngestLimits(max_series_per_agent=10_000, max_series_per_batch=10_000),
        catalog_refresh_s=0,
    )
    with running_metrics(metrics_engine, agents_address, config) as harness:
        asyncio.run(scenario(harness.address, harness))


def test_a_deregistered_hosts_open_stream_is_refused_within_seconds(metrics_engine, agents_address, agents_stub):
    from infrawatch.agents.v1 import agents_pb2
    from tests.integration.conftest import OPERATOR_TOKEN

    registered = agents_stub.RegisterAgent(agents_pb2.RegisterAgentRequest(hostname="revoked-host"), metadata=ENROLL)
    metadata = (("authorization", f"Bearer {registered.agent_token}"),)
    config = MetricsConfig(credentials=CREDENTIALS, auth_cache_ttl_s=0.5, catalog_refresh_s=0)

    async def scenario(address: str) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            call = metrics_pb2_grpc.MetricsServiceStub(channel).StreamMetrics(metadata=metadata)
            await call.write(
                pb.MetricBatch(sequence=1, series=[labelled("rv", "revoked-host", [wall_clock_ms()], [1.0])])
            )
            assert (await asyncio.wait_for(call.read(), timeout=5)).samples_accepted == 1
            agents_stub.DeregisterAgent(
                agents_pb2.DeregisterAgentRequest(agent_id=registered.agent_id),
                metadata=(("authorization", f"Bearer {OPERATOR_TOKEN}"),),
            )
            await asyncio.sleep(1.0)
            await call.write(
                pb.MetricBatch(sequence=2, series=[labelled("rv", "revoked-host", [wall_clock_ms()], [2.0])])
            )
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await asyncio.wait_for(call.read(), timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED

    with running_metrics(metrics_engine, agents_address, config) as harness:
        asyncio.run(scenario(harness.address))
