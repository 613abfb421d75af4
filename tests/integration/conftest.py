"""Real databases and real in-process gRPC servers on port 0."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine

from agent.tls import ClientTLS
from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from infrawatch.gateway.v1 import gateway_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2_grpc
from services.agents.__main__ import MIGRATIONS as AGENTS_MIGRATIONS
from services.agents.__main__ import VERSION_TABLE as AGENTS_VERSION_TABLE
from services.agents.domain import LivenessPolicy
from services.agents.repository import SqlUnitOfWork
from services.agents.service import AgentsContext
from services.agents.servicer import SERVICE_NAME as AGENTS_SERVICE
from services.agents.servicer import AgentServicer
from services.alerts.__main__ import MIGRATIONS as ALERTS_MIGRATIONS
from services.alerts.__main__ import VERSION_TABLE as ALERTS_VERSION_TABLE
from services.alerts.app import build_alerts_app
from services.alerts.service import read_rules
from services.alerts.servicer import SERVICE_NAME as ALERTS_SERVICE
from services.common.clock import wall_clock_ms
from services.common.credentials import Credentials
from services.common.db import migrate, unreachable_database_errors
from services.common.server import (
    AsyncServiceBinding,
    BackgroundAsyncServer,
    ServiceBinding,
    build_async_server,
    build_server,
    set_serving,
)
from services.common.tls import ServerTLS
from services.gateway.clients import AgentsClient as GatewayAgentsClient
from services.gateway.clients import AlertsClient as GatewayAlertsClient
from services.gateway.clients import MetricsClient as GatewayMetricsClient
from services.gateway.clients import channel_options
from services.gateway.service import GatewayContext
from services.gateway.servicer import SERVICE_NAME as GATEWAY_SERVICE
from services.gateway.servicer import OperatorServicer
from services.metrics.__main__ import MIGRATIONS as METRICS_MIGRATIONS
from services.metrics.__main__ import VERSION_TABLE as METRICS_VERSION_TABLE
from services.metrics.app import MetricsApp, MetricsConfig, build_metrics_app
from services.metrics.domain import IngestLimits
from services.metrics.ingest.stream import Ingestor
from services.metrics.servicer import SERVICE_NAME as METRICS_SERVICE
from services.metrics.storage.catalog import SeriesCatalog
from services.metrics.storage.ports import SampleStore

OPERATOR_TOKEN = "operator-test-token"
SERVICE_TOKEN = "service-test-token"
ENROLLMENT_TOKEN = "enrollment-test-token"
CREDENTIALS = Credentials(operator_token=OPERATOR_TOKEN, service_token=SERVICE_TOKEN, enrollment_token=ENROLLMENT_TOKEN)
# Metadata of the callers the tests play.
ENROLL = (("authorization", f"Bearer {ENROLLMENT_TOKEN}"),)
AS_SERVICE = (("authorization", f"Bearer {SERVICE_TOKEN}"),)
AS_OPERATOR = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)


@pytest.fixture
def agents_engine(engine: Engine) -> Engine:
    migrate(engine, AGENTS_MIGRATIONS, AGENTS_VERSION_TABLE)
    return engine


def agents_context(engine: Engine, credentials: Credentials = CREDENTIALS) -> AgentsContext:
    return AgentsContext(
        uow=lambda: SqlUnitOfWork(engine),
        now_ms=wall_clock_ms,
        policy=LivenessPolicy(heartbeat_interval_s=10),
        credentials=credentials,
    )


@pytest.fixture
def agents_ctx(agents_engine: Engine) -> AgentsContext:
    return agents_context(agents_engine)


@contextmanager
def running_agents(ctx: AgentsContext, tls: ServerTLS | None = None) -> Iterator[str]:
    """An agents service on the threaded server, built as its composition root builds it."""
    servicer = AgentServicer(ctx)
    server, health, port = build_server(
        [ServiceBinding(AGENTS_SERVICE, lambda s: agents_pb2_grpc.add_AgentServiceServicer_to_server(servicer, s))],
        address="127.0.0.1:0",
        max_message_bytes=4 * 1024 * 1024,
        unreachable=unreachable_database_errors(),
        tls=tls,
    )
    server.start()
    set_serving(health, [AGENTS_SERVICE], True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


@pytest.fixture
def agents_address(agents_ctx: AgentsContext) -> Iterator[str]:
    with running_agents(agents_ctx) as address:
        yield address


@pytest.fixture
def agents_stub(agents_address: str) -> Iterator[agents_pb2_grpc.AgentServiceStub]:
    with grpc.insecure_channel(agents_address) as channel:
        yield agents_pb2_grpc.AgentServiceStub(channel)


@dataclass
class MetricsHarness:
    address: str
    app: MetricsApp
    server: BackgroundAsyncServer

    @staticmethod
    def clock() -> int:
        return wall_clock_ms()

    @property
    def ingestor(self) -> Ingestor:
        return self.app.ingestor

    @property
    def samples(self) -> SampleStore:
        return self.app.samples

    @property
    def catalog(self) -> SeriesCatalog:
        return self.app.catalog


TEST_METRICS_CONFIG = MetricsConfig(
    limits=IngestLimits(max_series_per_batch=50, max_series_per_agent=100),
    max_query_points=100_000,
    catalog_refresh_s=0,
    credentials=CREDENTIALS,
)


@contextmanager
def running_metrics(
    engine: Engine,
    agents_address: str,
    config: MetricsConfig = TEST_METRICS_CONFIG,
    agents_tls: ClientTLS | None = None,
    tls: ServerTLS | None = None,
    max_message_bytes: int = 4 * 1024 * 1024,
) -> Iterator[MetricsHarness]:
    """A metrics service on the asyncio server, built exactly as its composition root builds it."""
    stop = threading.Event()
    channel = (agents_tls or ClientTLS()).channel(agents_address)
    app = build_metrics_app(engine, config, channel, stop, wall_clock_ms)
    server = BackgroundAsyncServer(
        lambda: build_async_server(
            [app.binding()],
            address="127.0.0.1:0",
            max_message_bytes=max_message_bytes,
            unreachable=unreachable_database_errors(),
            tls=tls,
        )
    )
    port = server.start([METRICS_SERVICE])
    try:
        yield MetricsHarness(f"127.0.0.1:{port}", app, server)
    finally:
        stop.set()
        server.stop(0)
        app.close()
        channel.close()


@pytest.fixture
def metrics_engine(agents_engine: Engine) -> Engine:
    migrate(agents_engine, METRICS_MIGRATIONS, METRICS_VERSION_TABLE)
    return agents_engine


@pytest.fixture
def metrics_harness(metrics_engine: Engine, agents_address: str) -> Iterator[MetricsHarness]:
    with running_metrics(metrics_engine, agents_address) as harness:
        yield harness


@pytest.fixture
def metrics_stub(metrics_harness: MetricsHarness) -> Iterator[metrics_pb2_grpc.MetricsServiceStub]:
    with grpc.insecure_channel(metrics_harness.address) as channel:
        yield metrics_pb2_grpc.MetricsServiceStub(channel)


@pytest.fixture
def agent_token(agents_stub: agents_pb2_grpc.AgentServiceStub) -> str:
    reply = agents_stub.RegisterAgent(agents_pb2.RegisterAgentRequest(hostname="metrics-test-host"), metadata=ENROLL)
    return str(reply.agent_token)


@contextmanager
def running_alerts(engine: Engine, agents_address: str, metrics_address: str, rules: Path) -> Iterator[str]:
    """An alerts service on the asyncio server, built as its composition root builds it."""
    migrate(engine, ALERTS_MIGRATIONS, ALERTS_VERSION_TABLE)
    stop = threading.Event()
    agents_channel, metrics_channel = grpc.insecure_channel(agents_address), grpc.insecure_channel(metrics_address)
    app = build_alerts_app(
        engine, metrics_channel, agents_channel, rules, CREDENTIALS, now_ms=wall_clock_ms, stop=stop, tick_s=0.1
    )
    app.start(read_rules(rules), stop)
    server = BackgroundAsyncServer(
        lambda: build_async_server(
            [app.binding()],
            address="127.0.0.1:0",
            max_message_bytes=4 * 1024 * 1024,
            unreachable=unreachable_database_errors(),
        )
    )
    port = server.start([ALERTS_SERVICE])
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        server.stop(0)
        app.close()
        agents_channel.close()
        metrics_channel.close()


@contextmanager
def running_gateway(
    agents_address: str,
    metrics_address: str,
    max_message_bytes: int = 4 * 1024 * 1024,
    alerts_address: str = "",
) -> Iterator[str]:
    """A gateway on the asyncio server, its channels built with the composition root's options."""
    options = channel_options(max_message_bytes)
    agents_channel = grpc.insecure_channel(agents_address, options=options)
    metrics_channel = grpc.insecure_channel(metrics_address, options=options)
    alerts_channel = grpc.insecure_channel(alerts_address, options=options) if alerts_address else None
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=4) as fan_out:
        ctx = GatewayContext(
            agents=GatewayAgentsClient(agents_channel, SERVICE_TOKEN, 2.0, stop),
            metrics=GatewayMetricsClient(
                metrics_channel,
                SERVICE_TOKEN,
                2.0,
                stop,
                live_channel=lambda: grpc.aio.insecure_channel(metrics_address, options=options),
            ),
            fan_out=fan_out,
            key_metrics=("cpu_usage_percent", "load1"),
            credentials=CREDENTIALS,
            status_poll_s=0.2,
            stop=stop,
            alerts=GatewayAlertsClient(
                alerts_channel,
                SERVICE_TOKEN,
                2.0,
                stop,
                live_channel=lambda: grpc.aio.insecure_channel(alerts_address, options=options),
            )
            if alerts_channel is not None
            else None,
        )
        servicer = OperatorServicer(ctx)
        server = BackgroundAsyncServer(
            lambda: build_async_server(
                [
                    AsyncServiceBinding(
                        GATEWAY_SERVICE, lambda s: gateway_pb2_grpc.add_OperatorServiceServicer_to_server(servicer, s)
                    )
                ],
                address="127.0.0.1:0",
                max_message_bytes=max_message_bytes,
            )
        )
        port = server.start([GATEWAY_SERVICE])
        try:
            yield f"127.0.0.1:{port}"
        finally:
            stop.set()
            server.stop(0)
            agents_channel.close()
            metrics_channel.close()
            if alerts_channel is not None:
                alerts_channel.close()


@pytest.fixture
def gateway_stub(
    agents_address: str, metrics_harness: MetricsHarness
) -> Iterator[gateway_pb2_grpc.OperatorServiceStub]:
    with (
        running_gateway(agents_address, metrics_harness.address) as address,
        grpc.insecure_channel(address) as channel,
    ):
        yield gateway_pb2_grpc.OperatorServiceStub(channel)
