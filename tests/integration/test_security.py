"""The attacks of the 'safe to expose' review, each reproduced over real gRPC: registration and
hostname takeover (finding 4), reads and AuthenticateAgent on the internal ports (finding 5),
and TLS / mutual TLS on the servers and the service-to-service channel (finding 7)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine

from agent.tls import ClientTLS
from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from infrawatch.gateway.v1 import gateway_pb2
from infrawatch.metrics.v1 import metrics_pb2, metrics_pb2_grpc
from services.common.tls import ServerTLS
from tests.conftest import TlsFiles
from tests.integration.conftest import (
    AS_OPERATOR,
    AS_SERVICE,
    CREDENTIALS,
    ENROLL,
    TEST_METRICS_CONFIG,
    agents_context,
    running_agents,
    running_metrics,
)

PROTECTED = dataclasses.replace(CREDENTIALS, protect_reads=True)


def refused(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def register(stub: agents_pb2_grpc.AgentServiceStub, hostname: str, **fields: Any) -> agents_pb2.RegisterAgentResponse:
    return stub.RegisterAgent(agents_pb2.RegisterAgentRequest(hostname=hostname, **fields), metadata=ENROLL, timeout=5)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


# Finding 4: registration is open and takes over hostnames.


def test_registering_without_the_enrolment_token_is_refused(agents_stub):
    request = agents_pb2.RegisterAgentRequest(hostname="intruder")
    assert refused(lambda: agents_stub.RegisterAgent(request, timeout=5))[0] == grpc.StatusCode.UNAUTHENTICATED
    code, details = refused(lambda: agents_stub.RegisterAgent(request, metadata=bearer("guess"), timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "enrolment token is not valid" in details


def test_a_second_machine_claiming_a_hostname_is_refused_and_shown_to_operators(agents_stub):
    owner = register(agents_stub, "web-1", labels={"env": "prod"})
    code, details = refused(lambda: register(agents_stub, "web-1", labels={"env": "attacker"}))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "already registered to another agent" in details and "ApproveAgent" in details
    # The real agent is not locked out and its metadata is untouched.
    agents_stub.Heartbeat(agents_pb2.HeartbeatRequest(agent_id=owner.agent_id), metadata=bearer(owner.agent_token))
    (listed,) = agents_stub.ListAgents(agents_pb2.ListAgentsRequest(), timeout=5).agents
    assert dict(listed.labels) == {"env": "prod"}
    assert listed.refused_registrations == 1 and listed.HasField("last_refused_registration_at")
    # Its own token lets it register again (metadata refresh, token rotation).
    again = register(agents_stub, "web-1", agent_token=owner.agent_token, labels={"env": "prod", "rack": "7"})
    assert again.agent_id == owner.agent_id and again.agent_token != owner.agent_token


def test_a_deregistered_host_stays_out_until_an_operator_approves_it_through_the_gateway(agents_stub, gateway_stub):
    host = register(agents_stub, "db-1")
    ref = gateway_pb2.AgentRef(hostname="db-1")
    gateway_stub.DeregisterAgent(gateway_pb2.DeregisterAgentRequest(agent=ref), metadata=AS_OPERATOR, timeout=5)
    code, details = refused(lambda: register(agents_stub, "db-1", agent_token=host.agent_token))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "deregistered by an operator" in details
    assert refused(lambda: gateway_stub.ApproveAgent(gateway_pb2.ApproveAgentRequest(agent=ref), timeout=5))[0] == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    approved = gateway_stub.ApproveAgent(gateway_pb2.ApproveAgentRequest(agent=ref), metadata=AS_OPERATOR, timeout=5)
    assert approved.agent.registration_approved and approved.agent.refused_registrations == 1
    back = register(agents_stub, "db-1")
    assert back.agent_id == host.agent_id and back.agent.status == agents_pb2.AGENT_STATUS_ONLINE
    assert refused(lambda: register(agents_stub, "db-1"))[0] == grpc.StatusCode.ALREADY_EXISTS  # approval used up


# Finding 5: PROTECT_READS is bypassed on the internal ports; AuthenticateAgent is open.


def test_authenticate_agent_answers_services_only(agents_stub):
    host = register(agents_stub, "web-2")
    request = agents_pb2.AuthenticateAgentRequest(agent_token=host.agent_token)
    for metadata in ((), bearer(host.agent_token), AS_OPERATOR, ENROLL):
        code, details = refused(lambda m=metadata: agents_stub.AuthenticateAgent(request, metadata=m, timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "InfraWatch services only" in details
    assert agents_stub.AuthenticateAgent(request, metadata=AS_SERVICE, timeout=5).hostname == "web-2"


@pytest.fixture
def protected_platform(agents_engine: Engine, metrics_engine: Engine) -> Iterator[tuple[str, str]]:
    """Agents and metrics services with INFRAWATCH_PROTECT_READS on."""
    config = dataclasses.replace(TEST_METRICS_CONFIG, credentials=PROTECTED)
    with (
        running_agents(agents_context(agents_engine, PROTECTED)) as agents_address,
        running_metrics(metrics_engine, agents_address, config) as metrics,
    ):
        yield agents_address, metrics.address


def test_protected_reads_hold_on_the_internal_ports_while_ingest_goes_on(protected_platform):
    agents_address, metrics_address = protected_platform
    with grpc.insecure_channel(agents_address) as a, grpc.insecure_channel(metrics_address) as m:
        agents, metrics = agents_pb2_grpc.AgentServiceStub(a), metrics_pb2_grpc.MetricsServiceStub(m)
        host = register(agents, "reader-test")
        now = int(time.time() * 1000)
        batch = metrics_pb2.MetricBatch(sequence=1)
        batch.series.add(labels=[metrics_pb2.Label(name="__name__", value="load1")], timestamps_ms=[now], values=[0.5])
        (ack,) = metrics.StreamMetrics(iter([batch]), metadata=bearer(host.agent_token), timeout=10)
        assert ack.samples_accepted == 1  # ingest verifies the agent with the service token
        selector = metrics_pb2.Selector(selector="load1")
        reads: dict[str, Callable[[Any], Any]] = {
            "ListAgents": lambda md: agents.ListAgents(agents_pb2.ListAgentsRequest(), metadata=md, timeout=5),
            "CountAgents": lambda md: agents.CountAgents(agents_pb2.CountAgentsRequest(), metadata=md, timeout=5),
            "GetAgent": lambda md: agents.GetAgent(
                agents_pb2.GetAgentRequest(hostname="reader-test"), metadata=md, timeout=5
            ),
            "QueryRange": lambda md: metrics.QueryRange(
                metrics_pb2.QueryRangeRequest(selector=selector), metadata=md, timeout=5
            ),
            "LatestValues": lambda md: metrics.LatestValues(
                metrics_pb2.LatestValuesRequest(selector=selector), metadata=md, timeout=5
            ),
            "ListSeries": lambda md: metrics.ListSeries(metrics_pb2.ListSeriesRequest(), metadata=md, timeout=5),
            "ListMetricNames": lambda md: metrics.ListMetricNames(
                metrics_pb2.ListMetricNamesRequest(), metadata=md, timeout=5
            ),
            "WatchMetrics": lambda md: next(
                metrics.WatchMetrics(metrics_pb2.WatchMetricsRequest(selector=selector), metadata=md, timeout=5)
            ),
        }
        for name, read in reads.items():
            for metadata in ((), bearer(host.agent_token), ENROLL):
                code, details = refused(lambda r=read, md=metadata: r(md))
                assert code == grpc.StatusCode.UNAUTHENTICATED, name
                assert "reads are protected" in details, name
            if name != "WatchMetrics":  # a watch with a valid token waits for samples
                read(AS_OPERATOR)
                read(AS_SERVICE)
        assert metrics.QueryRange(
            metrics_pb2.QueryRangeRequest(selector=selector), metadata=AS_OPERATOR, timeout=5
        ).series[0].values == [0.5]


# Finding 7: no TLS anywhere.


def agents_over(address: str, tls: ClientTLS) -> agents_pb2_grpc.AgentServiceStub:
    return agents_pb2_grpc.AgentServiceStub(tls.channel(address))


def test_a_tls_server_refuses_plaintext_and_answers_clients_that_trust_its_ca(agents_ctx, tls_files: TlsFiles):
    with running_agents(agents_ctx, ServerTLS(tls_files.server_cert, tls_files.server_key)) as address:
        plaintext = agents_over(address, ClientTLS())
        assert refused(lambda: register(plaintext, "web-3"))[0] == grpc.StatusCode.UNAVAILABLE
        untrusted = agents_over(address, ClientTLS(ca_file=tls_files.rogue_cert))
        assert refused(lambda: register(untrusted, "web-3"))[0] == grpc.StatusCode.UNAVAILABLE
        assert register(agents_over(address, ClientTLS(ca_file=tls_files.ca)), "web-3").agent_id
        # The certificate names localhost and 127.0.0.1; another name is checked, not waved through.
        renamed = ClientTLS(ca_file=tls_files.ca, server_name="agents.example.com")
        assert refused(lambda: register(agents_over(address, renamed), "web-4"))[0] == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca(agents_ctx, tls_files: TlsFiles):
    server_tls = ServerTLS(tls_files.server_cert, tls_files.server_key, client_ca_file=tls_files.ca)
    with running_agents(agents_ctx, server_tls) as address:
        for client in (
            ClientTLS(ca_file=tls_files.ca),
            ClientTLS(ca_file=tls_files.ca, cert_file=tls_files.rogue_cert, key_file=tls_files.rogue_key),
        ):
            assert refused(lambda c=client: register(agents_over(address, c), "web-5"))[0] == (
                grpc.StatusCode.UNAVAILABLE
            )
        good = ClientTLS(ca_file=tls_files.ca, cert_file=tls_files.client_cert, key_file=tls_files.client_key)
        assert register(agents_over(address, good), "web-5").agent_id


def test_metrics_verifies_agents_over_mutual_tls_and_serves_tls_itself(
    agents_ctx, metrics_engine: Engine, tls_files: TlsFiles
):
    server_tls = ServerTLS(tls_files.server_cert, tls_files.server_key, client_ca_file=tls_files.ca)
    client = ClientTLS(ca_file=tls_files.ca, cert_file=tls_files.client_cert, key_file=tls_files.client_key)
    with (
        running_agents(agents_ctx, server_tls) as agents_address,
        running_metrics(metrics_engine, agents_address, agents_tls=client, tls=server_tls) as metrics,
    ):
        host = register(agents_over(agents_address, client), "tls-host")
        stub = metrics_pb2_grpc.MetricsServiceStub(client.channel(metrics.address))
        batch = metrics_pb2.MetricBatch(sequence=1)
        batch.series.add(
            labels=[metrics_pb2.Label(name="__name__", value="load1")],
            timestamps_ms=[int(time.time() * 1000)],
            values=[1.0],
        )
        (ack,) = stub.StreamMetrics(iter([batch]), metadata=bearer(host.agent_token), timeout=10)
        assert ack.samples_accepted == 1
