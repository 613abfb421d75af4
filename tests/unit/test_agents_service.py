import pytest

from services.agents import service
from services.agents.domain import AgentStatus, Inventory, LivenessPolicy, Registration
from services.agents.service import AgentsContext
from services.common.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from tests.unit.fakes import FakeAgentRepository, FakeClock, FakeUnitOfWork

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store():
    return FakeAgentRepository()


@pytest.fixture
def ctx(store, clock):
    return AgentsContext(
        uow=lambda: FakeUnitOfWork(store),
        now_ms=clock,
        policy=LivenessPolicy(heartbeat_interval_s=10),
        operator_token="operator-secret",
    )


def register(ctx, hostname="web-1", **labels):
    return service.register_agent(ctx, Registration(hostname=hostname, agent_version="1.0", labels=labels))


def test_registering_a_new_host_creates_an_agent_with_a_token(ctx, store):
    agent, token = register(ctx, env="prod")
    assert store.rows[agent.agent_id].hostname == "web-1"
    assert store.rows[agent.agent_id].labels == {"env": "prod"}
    assert token and store.rows[agent.agent_id].token_hash != token


def test_registering_the_same_hostname_again_keeps_the_id_and_rotates_the_token(ctx, store):
    first, old_token = register(ctx, env="prod")
    second, new_token = service.register_agent(
        ctx, Registration(hostname="web-1", agent_version="2.0", labels={"env": "staging"})
    )
    assert second.agent_id == first.agent_id
    assert len(store.rows) == 1
    assert new_token != old_token
    assert store.rows[first.agent_id].agent_version == "2.0"
    assert store.rows[first.agent_id].labels == {"env": "staging"}
    with pytest.raises(Unauthenticated):
        service.heartbeat(ctx, first.agent_id, old_token, None)
    service.heartbeat(ctx, first.agent_id, new_token, None)


def test_heartbeat_moves_last_seen_forward(ctx, store, clock):
    agent, token = register(ctx)
    clock.advance(35)
    assert ctx.policy.status_of(store.rows[agent.agent_id], clock()) is AgentStatus.STALE
    service.heartbeat(ctx, agent.agent_id, token, Inventory(cpu_count=8))
    assert store.rows[agent.agent_id].last_heartbeat_at_ms == clock()
    assert store.rows[agent.agent_id].inventory.cpu_count == 8
    assert ctx.policy.status_of(store.rows[agent.agent_id], clock()) is AgentStatus.ONLINE


def test_heartbeat_with_a_wrong_token_is_unauthenticated(ctx):
    agent, _ = register(ctx)
    with pytest.raises(Unauthenticated, match="not valid"):
        service.heartbeat(ctx, agent.agent_id, "iwa_wrong", None)


def test_heartbeat_without_a_token_is_unauthenticated(ctx):
    agent, _ = register(ctx)
    with pytest.raises(Unauthenticated, match="missing agent token"):
        service.heartbeat(ctx, agent.agent_id, "", None)


def test_heartbeat_from_unknown_agent_is_not_found(ctx):
    with pytest.raises(NotFound):
        service.heartbeat(ctx, UNKNOWN_ID, "iwa_x", None)


def test_heartbeat_with_malformed_agent_id_is_invalid(ctx):
    with pytest.raises(InvalidArgument, match="agent_id"):
        service.heartbeat(ctx, "not-an-id", "iwa_x", None)


def test_deregistered_agent_cannot_heartbeat_or_authenticate(ctx):
    agent, token = register(ctx)
    retired = service.deregister_agent(ctx, agent.agent_id, token)
    assert retired.deregistered_at_ms is not None
    with pytest.raises(NotFound):
        service.heartbeat(ctx, agent.agent_id, token, None)
    with pytest.raises(Unauthenticated):
        service.authenticate_agent(ctx, token)


def test_operator_token_may_deregister_any_agent(ctx):
    agent, _ = register(ctx)
    assert service.deregister_agent(ctx, agent.agent_id, "operator-secret").deregistered_at_ms is not None


def test_another_agents_token_may_not_deregister(ctx):
    victim, _ = register(ctx, "web-1")
    _, other_token = register(ctx, "web-2")
    with pytest.raises(PermissionDenied):
        service.deregister_agent(ctx, victim.agent_id, other_token)


def test_registering_a_deregistered_hostname_revives_it(ctx, store, clock):
    agent, token = register(ctx)
    service.deregister_agent(ctx, agent.agent_id, token)
    revived, _ = register(ctx)
    assert revived.agent_id == agent.agent_id
    assert ctx.policy.status_of(store.rows[agent.agent_id], clock()) is AgentStatus.ONLINE


def test_authenticate_returns_the_agent_owning_the_token(ctx):
    agent, token = register(ctx, env="prod")
    assert service.authenticate_agent(ctx, token).agent_id == agent.agent_id
    with pytest.raises(Unauthenticated):
        service.authenticate_agent(ctx, "iwa_unknown")


def test_listing_pages_through_agents_in_hostname_order(ctx):
    for i in range(5):
        register(ctx, f"host-{i}")
    first = service.list_agents(ctx, frozenset(), {}, 2, "")
    second = service.list_agents(ctx, frozenset(), {}, 2, first.next_page_token)
    third = service.list_agents(ctx, frozenset(), {}, 2, second.next_page_token)
    hostnames = [a.hostname for page in (first, second, third) for a in page.agents]
    assert hostnames == [f"host-{i}" for i in range(5)]
    assert third.next_page_token == ""


def test_listing_filters_by_status_and_labels(ctx, clock):
    register(ctx, "old", env="prod")
    clock.advance(60)
    register(ctx, "fresh", env="prod")
    register(ctx, "dev", env="dev")
    online_prod = service.list_agents(ctx, frozenset({AgentStatus.ONLINE}), {"env": "prod"}, 0, "")
    offline = service.list_agents(ctx, frozenset({AgentStatus.OFFLINE}), {}, 0, "")
    assert [a.hostname for a in online_prod.agents] == ["fresh"]
    assert [a.hostname for a in offline.agents] == ["old"]


def test_listing_rejects_bad_page_token_and_page_size(ctx):
    with pytest.raises(InvalidArgument, match="page_token"):
        service.list_agents(ctx, frozenset(), {}, 0, "%%%")
    with pytest.raises(InvalidArgument, match="page_size"):
        service.list_agents(ctx, frozenset(), {}, 5000, "")


def test_get_unknown_agent_is_not_found(ctx):
    with pytest.raises(NotFound, match=UNKNOWN_ID):
        service.get_agent(ctx, UNKNOWN_ID)


def test_get_agent_by_hostname_finds_it_or_says_not_found(ctx):
    agent, _ = register(ctx, "db-9")
    assert service.get_agent(ctx, "", "db-9").agent_id == agent.agent_id
    with pytest.raises(NotFound, match="db-10"):
        service.get_agent(ctx, "", "db-10")
