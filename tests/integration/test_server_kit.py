"""The shared server factory: error mapping, health before readiness, graceful stop."""

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infrawatch.agents.v1 import agents_pb2 as pb
from infrawatch.agents.v1 import agents_pb2_grpc
from services.agents.domain import LivenessPolicy
from services.agents.service import AgentsContext
from services.agents.servicer import SERVICE_NAME, AgentServicer
from services.common.grpc_errors import INTERNAL_MESSAGE
from services.common.server import ServiceBinding, build_server, serve
from tests.integration.conftest import ENROLL


class ExplodingUnitOfWork:
    def __enter__(self):
        raise RuntimeError("connection string with password=hunter2")

    def __exit__(self, *exc):
        return None


def start(ctx):
    servicer = AgentServicer(ctx)
    return build_server(
        [ServiceBinding(SERVICE_NAME, lambda s: agents_pb2_grpc.add_AgentServiceServicer_to_server(servicer, s))],
        address="127.0.0.1:0",
        max_message_bytes=1024 * 1024,
    )


def test_unexpected_exception_is_internal_with_a_generic_message(caplog):
    ctx = AgentsContext(uow=ExplodingUnitOfWork, now_ms=lambda: 0, policy=LivenessPolicy())
    server, _, port = start(ctx)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = agents_pb2_grpc.AgentServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.GetAgent(pb.GetAgentRequest(agent_id="00000000-0000-4000-8000-000000000000"))
    finally:
        server.stop(0)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == INTERNAL_MESSAGE
    assert "hunter2" not in info.value.details()
    assert any("hunter2" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_message_larger_than_the_limit_is_resource_exhausted():
    ctx = AgentsContext(uow=ExplodingUnitOfWork, now_ms=lambda: 0, policy=LivenessPolicy())
    server, _, port = start(ctx)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = agents_pb2_grpc.AgentServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.RegisterAgent(pb.RegisterAgentRequest(hostname="h" * (2 * 1024 * 1024)), metadata=ENROLL)
    finally:
        server.stop(0)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_health_is_not_serving_until_prepared_and_not_serving_after_stop():
    ctx = AgentsContext(uow=ExplodingUnitOfWork, now_ms=lambda: 0, policy=LivenessPolicy())
    server, health, port = start(ctx)
    stop = threading.Event()
    may_prepare = threading.Event()
    prepared = threading.Event()

    def prepare():
        if not may_prepare.is_set():
            raise ConnectionError("database not reachable yet")
        prepared.set()

    runner = threading.Thread(
        target=serve,
        kwargs=dict(
            server=server,
            health_servicer=health,
            service_names=[SERVICE_NAME],
            prepare=prepare,
            is_healthy=lambda: True,
            stop=stop,
            grace_seconds=1,
            check_every_seconds=0.05,
        ),
    )
    runner.start()
    request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        probe = health_pb2_grpc.HealthStub(channel)
        assert probe.Check(request, timeout=2).status == health_pb2.HealthCheckResponse.NOT_SERVING
        may_prepare.set()
        assert prepared.wait(5)
        for _ in range(100):
            if probe.Check(request, timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                break
            threading.Event().wait(0.05)
        assert probe.Check(request, timeout=2).status == health_pb2.HealthCheckResponse.SERVING
        stop.set()
        runner.join(5)
    assert not runner.is_alive()
    assert health.Check(request, None).status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_a_database_that_cannot_be_reached_is_unavailable_so_clients_retry():
    from sqlalchemy import text

    from services.common.db import create_db_engine, unreachable_database_errors

    # A real connection attempt to a port nothing listens on: the error PostgreSQL being down gives.
    engine = create_db_engine("postgresql://postgres@127.0.0.1:1/test", connect_args={"connect_timeout": 2})

    class DownUnitOfWork:
        def __enter__(self):
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))

        def __exit__(self, *exc):
            return None

    servicer = AgentServicer(AgentsContext(uow=DownUnitOfWork, now_ms=lambda: 0, policy=LivenessPolicy()))
    server, _, port = build_server(
        [ServiceBinding(SERVICE_NAME, lambda s: agents_pb2_grpc.add_AgentServiceServicer_to_server(servicer, s))],
        address="127.0.0.1:0",
        max_message_bytes=1024 * 1024,
        unreachable=unreachable_database_errors(),
    )
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as info:
            agents_pb2_grpc.AgentServiceStub(channel).GetAgent(
                pb.GetAgentRequest(agent_id="00000000-0000-4000-8000-000000000000"), timeout=10
            )
    finally:
        server.stop(0)
        engine.dispose()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # The reason, without the server's address or SQL, and what to do.
    assert info.value.details() == "the service's database is unavailable (Connection refused); retry shortly"


def test_refused_credentials_are_warnings_and_routine_calls_stay_out_of_the_default_log(agents_stub, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="infrawatch.rpc")
    registered = agents_stub.RegisterAgent(pb.RegisterAgentRequest(hostname="log-level-host"), metadata=ENROLL)
    agents_stub.ListAgents(pb.ListAgentsRequest())
    with pytest.raises(grpc.RpcError) as refused:
        agents_stub.Heartbeat(
            pb.HeartbeatRequest(agent_id=registered.agent_id), metadata=(("authorization", "Bearer iwa_wrong"),)
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finished = {
        record.fields["method"].rsplit("/", 1)[-1]: record.levelno
        for record in caplog.records
        if record.getMessage() == "rpc finished"
    }
    assert finished["ListAgents"] == logging.DEBUG
    assert finished["Heartbeat"] == logging.WARNING
