"""Real databases and real in-process gRPC servers on port 0."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from infrawatch.agents.v1 import agents_pb2_grpc
from sqlalchemy import Engine

from services.agents.__main__ import MIGRATIONS as AGENTS_MIGRATIONS
from services.agents.__main__ import VERSION_TABLE as AGENTS_VERSION_TABLE
from services.agents.domain import LivenessPolicy
from services.agents.repository import SqlUnitOfWork
from services.agents.service import AgentsContext
from services.agents.servicer import SERVICE_NAME as AGENTS_SERVICE
from services.agents.servicer import AgentServicer
from services.common.clock import wall_clock_ms
from services.common.db import migrate
from services.common.server import ServiceBinding, build_server, set_serving

OPERATOR_TOKEN = "operator-test-token"


@pytest.fixture
def agents_engine(engine: Engine) -> Engine:
    migrate(engine, AGENTS_MIGRATIONS, AGENTS_VERSION_TABLE)
    return engine


@pytest.fixture
def agents_ctx(agents_engine: Engine) -> AgentsContext:
    return AgentsContext(
        uow=lambda: SqlUnitOfWork(agents_engine),
        now_ms=wall_clock_ms,
        policy=LivenessPolicy(heartbeat_interval_s=10),
        operator_token=OPERATOR_TOKEN,
    )


@pytest.fixture
def agents_address(agents_ctx: AgentsContext) -> Iterator[str]:
    servicer = AgentServicer(agents_ctx)
    server, health, port = build_server(
        [ServiceBinding(AGENTS_SERVICE, lambda s: agents_pb2_grpc.add_AgentServiceServicer_to_server(servicer, s))],
        address="127.0.0.1:0",
        max_message_bytes=4 * 1024 * 1024,
    )
    server.start()
    set_serving(health, [AGENTS_SERVICE], True)
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture
def agents_stub(agents_address: str) -> Iterator[agents_pb2_grpc.AgentServiceStub]:
    with grpc.insecure_channel(agents_address) as channel:
        yield agents_pb2_grpc.AgentServiceStub(channel)
