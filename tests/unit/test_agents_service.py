from dataclasses import replace

import pytest

from services.agents import service
from services.agents.domain import AgentStatus, Inventory, LivenessPolicy, Registration
from services.agents.service import AgentsContext
from services.common.credentials import Credentials
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from tests.unit.fakes import FakeAgentRepository, FakeClock, FakeUnitOfWork

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
SERVICE = "service-secret"
ENROLLMENT = "enrollment-secret"


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
        credentials=Credentials(operator_token="operator-secret", service_token=SERVICE, enrollment_token=ENROLLMENT),
    )


def register(ctx, hostname="web-1", agent_token="", **labels):
    return service.register_agent(
        ctx, Registration(hostname=hostname, agent_version="1.0", labels=labels), ENROLLMENT, agent_token
    )


def test_registering_a_new_host_creates_an_agent_with_a_token(ctx, store):
    agent, token = register(ctx, env="prod")
    assert store.rows[agent.agent_id].hostname == "web-1"
    assert store.rows[agent.agent_id].labels == {"env": "prod"}
    assert token and store.rows[agent.agent_id].token_hash != token


def test_registering_the_same_hostname_again_keeps_the_id_and_rotates_the_token(ctx, store):
    first, old_token = register(ctx, env="prod")
    second, new_token = service.register_agent(
        ctx, Registration(hostname="web-1", agent_version="2.0", labels={"env": "staging"}), ENROLLMENT, old_token
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
        service.authenticate_agent(ctx, SERVICE, token)


def test_operator_token_may_deregister_any_agent(ctx):
    agent, _ = register(ctx)
    assert service.deregister_agent(ctx, agent.agent_id, "operator-secret").deregistered_at_ms is not None


def test_another_agents_token_may_not_deregister(ctx):
    victim, _ = register(ctx, "web-1")
    _, other_token = register(ctx, "web-2")
    with pytest.raises(PermissionDenied):
        service.deregister_agent(ctx, victim.agent_id, other_token)


def test_a_deregistered_host_stays_deregistered_until_an_operator_approves_it(ctx, store, clock):
    agent, token = register(ctx)
    service.deregister_agent(ctx, agent.agent_id, "operator-secret")
    for presented in ("", token):
        with pytest.raises(FailedPrecondition, match=r"deregistered by an operator.*ApproveAgent"):
            register(ctx, agent_token=presented)
    assert store.rows[agent.agent_id].refused_registrations == 2
    assert ctx.policy.status_of(store.rows[agent.agent_id], clock()) is AgentStatus.DEREGISTERED

    service.approve_agent(ctx, "web-1", "operator-secret")
    revived, _ = register(ctx)
    assert revived.agent_id == agent.agent_id
    assert ctx.policy.status_of(store.rows[agent.agent_id], clock()) is AgentStatus.ONLINE
    assert not store.rows[agent.agent_id].registration_approved  # one approval, one registration


def test_registration_needs_the_enrolment_token(ctx):
    for presented, message in (("", "needs the enrolment token"), ("guess", "not valid")):
        with pytest.raises(Unauthenticated, match=message):
            service.register_agent(ctx, Registration(hostname="web-1"), presented)


def test_registration_is_closed_without_an_enrolment_token_configured(store, clock):
    closed = AgentsContext(uow=lambda: FakeUnitOfWork(store), now_ms=clock, policy=LivenessPolicy())
    with pytest.raises(FailedPrecondition, match="INFRAWATCH_ENROLLMENT_TOKEN"):
        service.register_agent(closed, Registration(hostname="web-1"), "")


def test_another_machine_cannot_take_over_a_registered_hostname(ctx, store, clock):
    """The second machine is refused (and counted for operators); the first keeps its token."""
    owner, owner_token = register(ctx, env="prod")
    clock.advance(5)
    for presented in ("", "iwa_stolen-or-stale"):
        with pytest.raises(AlreadyExists, match="already registered to another agent"):
            register(ctx, agent_token=presented, env="attacker")
    kept = store.rows[owner.agent_id]
    assert kept.labels == {"env": "prod"}
    assert kept.refused_registrations == 2 and kept.last_refused_registration_at_ms == clock()
    service.heartbeat(ctx, owner.agent_id, owner_token, None)


def test_an_operator_approval_lets_a_reinstalled_machine_take_its_hostname_back(ctx, store):
    owner, old_token = register(ctx)
    with pytest.raises(Unauthenticated):
        service.approve_agent(ctx, "web-1", "not-the-operator")
    with pytest.raises(NotFound, match="needs no approval"):
        service.approve_agent(ctx, "web-new", "operator-secret")
    assert service.approve_agent(ctx, "web-1", "operator-secret").registration_approved
    again, new_token = register(ctx)
    assert again.agent_id == owner.agent_id and new_token != old_token
    with pytest.raises(AlreadyExists):
        register(ctx)  # the approval was used up


def test_authenticate_returns_the_agent_owning_the_token(ctx):
    agent, token = register(ctx, env="prod")
    assert service.authenticate_agent(ctx, SERVICE, token).agent_id == agent.agent_id
    with pytest.raises(Unauthenticated):
        service.authenticate_agent(ctx, SERVICE, "iwa_unknown")


def test_authenticate_is_for_services_only(ctx):
    _, token = register(ctx)
    for presented in ("", token, "operator-secret"):
        with pytest.raises(PermissionDenied, match="InfraWatch services only"):
            service.authenticate_agent(ctx, presented, token)


def test_protected_reads_need_the_operator_or_the_service_token(store, clock):
    protected = AgentsContext(
        uow=lambda: FakeUnitOfWork(store),
        now_ms=clock,
        policy=LivenessPolicy(),
        credentials=Credentials(
            operator_token="op", service_token=SERVICE, enrollment_token=ENROLLMENT, protect_reads=True
        ),
    )
    agent, token = register(protected)
    for presented in ("", token, ENROLLMENT):
        with pytest.raises(Unauthenticated, match="reads are protected"):
            service.list_agents(protected, presented, frozenset(), {}, 0, "")
        with pytest.raises(Unauthenticated, match="reads are protected"):
            service.get_agent(protected, presented, agent.agent_id)
    assert service.list_agents(protected, "op", frozenset(), {}, 0, "").agents
    assert service.get_agent(protected, SERVICE, agent.agent_id).agent_id == agent.agent_id


def test_inventory_numbers_beyond_the_store_columns_are_invalid(ctx):
    agent, token = register(ctx)
    with pytest.raises(InvalidArgument, match="memory_total_bytes is 18446744073709551615"):
        service.heartbeat(ctx, agent.agent_id, token, Inventory(memory_total_bytes=2**64 - 1))
    with pytest.raises(InvalidArgument, match="cpu_count"):
        service.register_agent(ctx, Registration(hostname="big", inventory=Inventory(cpu_count=2**32 - 1)), ENROLLMENT)


def test_listing_pages_through_agents_in_hostname_order(ctx):
    for i in range(5):
        register(ctx, f"host-{i}")
    first = service.list_agents(ctx, "", frozenset(), {}, 2, "")
    second = service.list_agents(ctx, "", frozenset(), {}, 2, first.next_page_token)
    third = service.list_agents(ctx, "", frozenset(), {}, 2, second.next_page_token)
    hostnames = [a.hostname for page in (first, second, third) for a in page.agents]
    assert hostnames == [f"host-{i}" for i in range(5)]
    assert third.next_page_token == ""


def test_listing_filters_by_status_and_labels(ctx, clock):
    register(ctx, "old", env="prod")
    clock.advance(60)
    register(ctx, "fresh", env="prod")
    register(ctx, "dev", env="dev")
    online_prod = service.list_agents(ctx, "", frozenset({AgentStatus.ONLINE}), {"env": "prod"}, 0, "")
    offline = service.list_agents(ctx, "", frozenset({AgentStatus.OFFLINE}), {}, 0, "")
    assert [a.hostname for a in online_prod.agents] == ["fresh"]
    assert [a.hostname for a in offline.agents] == ["old"]


def test_listing_rejects_bad_page_token_and_page_size(ctx):
    with pytest.raises(InvalidArgument, match="page_token"):
        service.list_agents(ctx, "", frozenset(), {}, 0, "%%%")
    with pytest.raises(InvalidArgument, match="page_size"):
        service.list_agents(ctx, "", frozenset(), {}, 5000, "")


def test_get_unknown_agent_is_not_found(ctx):
    with pytest.raises(NotFound, match=UNKNOWN_ID):
        service.get_agent(ctx, "", UNKNOWN_ID)


def test_get_agent_by_hostname_finds_it_or_says_not_found(ctx):
    agent, _ = register(ctx, "db-9")
    assert service.get_agent(ctx, "", "", "db-9").agent_id == agent.agent_id
    with pytest.raises(NotFound, match="db-10"):
        service.get_agent(ctx, "", "", "db-10")


def test_text_postgresql_cannot_hold_is_invalid_before_it_reaches_the_store(ctx):
    """Found by the hostile-input suite: a NUL in a hostname lookup was INTERNAL on PostgreSQL."""
    with pytest.raises(InvalidArgument, match="hostname"):
        service.get_agent(ctx, "", "", "web\x00-1")
    with pytest.raises(InvalidArgument, match="NUL"):
        register(ctx, "web-1", env="pro\x00d")
    with pytest.raises(InvalidArgument, match="page_token"):
        service.list_agents(ctx, "", frozenset(), {}, 0, "d2ViAC0x")  # base64 of "web\0-1"


def test_our_own_downtime_makes_no_host_late_but_a_host_silent_before_stays_late(ctx, store, clock):
    alive, _ = register(ctx, hostname="alive")
    clock.advance(60)
    dead, _ = register(ctx, hostname="dead-before")  # registered, then silent: its heartbeat is older
    store.rows[dead.agent_id] = replace(store.rows[dead.agent_id], last_heartbeat_at_ms=clock() - 120_000)
    store.rows[alive.agent_id] = replace(store.rows[alive.agent_id], last_heartbeat_at_ms=clock())
    clock.advance(300)  # the agents service is down for five minutes, then starts
    downtime = service.resume_liveness(ctx)
    assert downtime.paused_ms == 300_000
    status = lambda agent: ctx.policy.status_of(store.rows[agent.agent_id], clock())  # noqa: E731
    assert status(alive) is AgentStatus.ONLINE  # judged afresh: it has its intervals to heartbeat
    assert status(dead) is AgentStatus.OFFLINE  # as late as it was when we stopped
    clock.advance(21)  # two intervals and a second without a heartbeat: now it is late
    assert status(alive) is AgentStatus.STALE


def test_a_start_next_to_a_running_replica_discounts_next_to_nothing(ctx, store, clock):
    agent, _ = register(ctx)
    clock.advance(1)
    assert service.resume_liveness(ctx).paused_ms == 1_000  # the newest heartbeat is a second old
    clock.advance(21)
    assert ctx.policy.status_of(store.rows[agent.agent_id], clock()) is AgentStatus.STALE
