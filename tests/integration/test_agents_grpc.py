"""The agents servicer over real gRPC on port 0, backed by SQLite and PostgreSQL."""

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infrawatch.agents.v1 import agents_pb2 as pb
from tests.integration.conftest import AS_SERVICE, ENROLL, OPERATOR_TOKEN


def bearer(token: str):
    return (("authorization", f"Bearer {token}"),)


def register(stub, hostname="web-1", agent_token="", **labels):
    return stub.RegisterAgent(
        pb.RegisterAgentRequest(
            hostname=hostname, agent_version="1.0", os="linux", arch="x86_64", labels=labels, agent_token=agent_token
        ),
        metadata=ENROLL,
    )


def code_and_details(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_register_heartbeat_get_and_list_round_trip(agents_stub):
    registered = register(agents_stub, env="prod")
    assert registered.agent_token.startswith("iwa_")
    assert registered.heartbeat_interval_seconds == 10
    agents_stub.Heartbeat(pb.HeartbeatRequest(agent_id=registered.agent_id), metadata=bearer(registered.agent_token))
    got = agents_stub.GetAgent(pb.GetAgentRequest(agent_id=registered.agent_id)).agent
    assert got.hostname == "web-1"
    assert got.status == pb.AGENT_STATUS_ONLINE
    assert dict(got.labels) == {"env": "prod"}
    listed = agents_stub.ListAgents(pb.ListAgentsRequest(label_selector={"env": "prod"}))
    assert [a.agent_id for a in listed.agents] == [registered.agent_id]


def test_re_registration_with_the_current_token_keeps_the_id_and_rotates_the_token(agents_stub):
    first = register(agents_stub)
    second = register(agents_stub, agent_token=first.agent_token)
    assert first.agent_id == second.agent_id
    assert first.agent_token != second.agent_token
    assert len(agents_stub.ListAgents(pb.ListAgentsRequest()).agents) == 1


def test_token_is_never_echoed_outside_register(agents_stub):
    registered = register(agents_stub)
    got = agents_stub.GetAgent(pb.GetAgentRequest(agent_id=registered.agent_id))
    listed = agents_stub.ListAgents(pb.ListAgentsRequest())
    assert registered.agent_token.encode() not in got.SerializeToString()
    assert registered.agent_token.encode() not in listed.SerializeToString()


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (pb.RegisterAgentRequest(hostname=""), "hostname is required"),
        (pb.RegisterAgentRequest(hostname="x" * 300), "hostname is 300 characters long"),
        (pb.RegisterAgentRequest(hostname="h", labels={"bad-name": "v"}), "label name 'bad-name'"),
        (pb.RegisterAgentRequest(hostname="h", labels={f"l{i}": "v" for i in range(40)}), "labels has 40"),
    ],
)
def test_bad_registration_is_invalid_argument_naming_the_field(agents_stub, request_, needle):
    code, details = code_and_details(lambda: agents_stub.RegisterAgent(request_, metadata=ENROLL))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in details


def test_heartbeat_errors_map_to_clear_status_codes(agents_stub):
    registered = register(agents_stub)
    request = pb.HeartbeatRequest(agent_id=registered.agent_id)
    assert code_and_details(lambda: agents_stub.Heartbeat(request))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert (
        code_and_details(lambda: agents_stub.Heartbeat(request, metadata=bearer("iwa_wrong")))[0]
        == grpc.StatusCode.UNAUTHENTICATED
    )
    unknown = pb.HeartbeatRequest(agent_id="00000000-0000-4000-8000-000000000000")
    assert (
        code_and_details(lambda: agents_stub.Heartbeat(unknown, metadata=bearer(registered.agent_token)))[0]
        == grpc.StatusCode.NOT_FOUND
    )
    malformed = pb.HeartbeatRequest(agent_id="nope")
    code, details = code_and_details(lambda: agents_stub.Heartbeat(malformed, metadata=bearer("x")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "agent_id" in details


def test_deregister_by_operator_then_the_token_stops_working(agents_stub):
    registered = register(agents_stub)
    retired = agents_stub.DeregisterAgent(
        pb.DeregisterAgentRequest(agent_id=registered.agent_id), metadata=bearer(OPERATOR_TOKEN)
    ).agent
    assert retired.status == pb.AGENT_STATUS_DEREGISTERED
    code, _ = code_and_details(
        lambda: agents_stub.AuthenticateAgent(
            pb.AuthenticateAgentRequest(agent_token=registered.agent_token), metadata=AS_SERVICE
        )
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    statuses = [pb.AGENT_STATUS_DEREGISTERED]
    assert len(agents_stub.ListAgents(pb.ListAgentsRequest(statuses=statuses)).agents) == 1
    assert len(agents_stub.ListAgents(pb.ListAgentsRequest()).agents) == 0


def test_deregister_with_a_foreign_token_is_permission_denied(agents_stub):
    victim = register(agents_stub, "web-1")
    other = register(agents_stub, "web-2")
    code, _ = code_and_details(
        lambda: agents_stub.DeregisterAgent(
            pb.DeregisterAgentRequest(agent_id=victim.agent_id), metadata=bearer(other.agent_token)
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_authenticate_agent_identifies_the_token_owner(agents_stub):
    registered = register(agents_stub, role="db")
    who = agents_stub.AuthenticateAgent(
        pb.AuthenticateAgentRequest(agent_token=registered.agent_token), metadata=AS_SERVICE
    )
    assert (who.agent_id, who.hostname, dict(who.labels)) == (registered.agent_id, "web-1", {"role": "db"})


def test_pagination_over_grpc_visits_every_agent_once(agents_stub):
    for n in range(7):
        register(agents_stub, f"host-{n}")
    seen, token = [], ""
    while True:
        page = agents_stub.ListAgents(pb.ListAgentsRequest(page_size=3, page_token=token))
        seen += [a.hostname for a in page.agents]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"host-{n}" for n in range(7)]


def test_health_reports_serving_for_the_agent_service(agents_address):
    with grpc.insecure_channel(agents_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = health.Check(health_pb2.HealthCheckRequest(service="infrawatch.agents.v1.AgentService"))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_remote_write_credentials_are_issued_listed_authenticated_and_revoked_by_operators(agents_stub):
    as_operator = bearer(OPERATOR_TOKEN)
    created = agents_stub.CreateRemoteWriteCredential(
        pb.CreateRemoteWriteCredentialRequest(name="prometheus-eu-1"), metadata=as_operator
    )
    assert created.token.startswith("iwr_") and created.credential.name == "prometheus-eu-1"
    who = agents_stub.AuthenticateAgent(pb.AuthenticateAgentRequest(agent_token=created.token), metadata=AS_SERVICE)
    assert (who.agent_id, who.hostname, who.may_write_any_host, who.credential_name) == (
        created.credential.credential_id,
        "",
        True,
        "prometheus-eu-1",
    )
    listed = agents_stub.ListRemoteWriteCredentials(pb.ListRemoteWriteCredentialsRequest(), metadata=as_operator)
    assert [c.name for c in listed.credentials] == ["prometheus-eu-1"]
    assert created.token not in str(listed)  # tokens are shown once, never listed

    code, details = code_and_details(
        lambda: agents_stub.CreateRemoteWriteCredential(
            pb.CreateRemoteWriteCredentialRequest(name="prometheus-eu-1"), metadata=as_operator
        )
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and "prometheus-eu-1" in details

    revoked = agents_stub.RevokeRemoteWriteCredential(
        pb.RevokeRemoteWriteCredentialRequest(credential="prometheus-eu-1"), metadata=as_operator
    )
    assert revoked.credential.HasField("revoked_at")
    code, details = code_and_details(
        lambda: agents_stub.AuthenticateAgent(
            pb.AuthenticateAgentRequest(agent_token=created.token), metadata=AS_SERVICE
        )
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in details


@pytest.mark.parametrize(
    "call",
    [
        lambda stub, md: stub.CreateRemoteWriteCredential(pb.CreateRemoteWriteCredentialRequest(name="x"), metadata=md),
        lambda stub, md: stub.ListRemoteWriteCredentials(pb.ListRemoteWriteCredentialsRequest(), metadata=md),
        lambda stub, md: stub.RevokeRemoteWriteCredential(
            pb.RevokeRemoteWriteCredentialRequest(credential="x"), metadata=md
        ),
    ],
)
def test_only_operators_manage_remote_write_credentials(agents_stub, call):
    agent = register(agents_stub)
    for metadata in ((), AS_SERVICE, bearer(agent.agent_token)):
        code, _ = code_and_details(lambda metadata=metadata: call(agents_stub, metadata))
        assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def test_a_remote_write_credential_name_is_checked(agents_stub):
    for name, problem in (("", "name is required"), ("a b", "invalid"), ("x" * 101, "limit is 100")):
        code, details = code_and_details(
            lambda name=name: agents_stub.CreateRemoteWriteCredential(
                pb.CreateRemoteWriteCredentialRequest(name=name), metadata=bearer(OPERATOR_TOKEN)
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and problem in details


def test_count_agents_gives_every_status_and_the_newest_first_listing_has_one_page(agents_stub):
    for n in range(3):
        register(agents_stub, hostname=f"web-{n}")
    counts = {c.status: c.count for c in agents_stub.CountAgents(pb.CountAgentsRequest()).counts}
    assert counts == {
        pb.AGENT_STATUS_ONLINE: 3, pb.AGENT_STATUS_STALE: 0, pb.AGENT_STATUS_OFFLINE: 0, pb.AGENT_STATUS_DEREGISTERED: 0
    }  # fmt: skip
    newest = pb.ListAgentsRequest(page_size=2, order=pb.AGENT_ORDER_NEWEST_HEARTBEAT_FIRST)
    page = agents_stub.ListAgents(newest)
    assert len(page.agents) == 2 and page.next_page_token == ""
    newest.page_token = agents_stub.ListAgents(pb.ListAgentsRequest(page_size=1)).next_page_token
    code, details = code_and_details(lambda: agents_stub.ListAgents(newest))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "one page only" in details
