"""The SQL repository and unit of work, on SQLite and on PostgreSQL."""

from dataclasses import replace

import pytest
from sqlalchemy import inspect

from services.agents.domain import Agent, AgentQuery, AgentStatus, Inventory, LivenessPolicy
from services.agents.repository import SqlUnitOfWork

NOW = 1_700_000_000_000
POLICY = LivenessPolicy(heartbeat_interval_s=10)


def make_agent(n: int, labels: dict[str, str] | None = None, seen_ms: int = NOW) -> Agent:
    return Agent(
        agent_id=f"00000000-0000-4000-8000-{n:012d}",
        hostname=f"host-{n:03d}",
        agent_version="1.2.3",
        os="linux",
        arch="x86_64",
        labels=labels or {},
        inventory=Inventory(cpu_count=4, memory_total_bytes=8 << 30, kernel_version="6.1", boot_time_ms=NOW - 5),
        registered_at_ms=NOW - 1000,
        last_heartbeat_at_ms=seen_ms,
        token_hash=f"{n:064d}",
    )


def test_migrations_create_the_agents_tables(agents_engine):
    tables = set(inspect(agents_engine).get_table_names())
    assert {"agents", "agent_labels", "alembic_version_agents"} <= tables


def test_added_agent_reads_back_identically_by_id_hostname_and_token(agents_engine):
    agent = make_agent(1, {"env": "prod", "role": "db"})
    with SqlUnitOfWork(agents_engine) as uow:
        uow.agents.add(agent)
        uow.commit()
    with SqlUnitOfWork(agents_engine) as uow:
        assert uow.agents.get(agent.agent_id) == agent
        assert uow.agents.get_by_hostname("host-001") == agent
        assert uow.agents.get_by_token_hash(agent.token_hash) == agent
        assert uow.agents.get("00000000-0000-4000-8000-999999999999") is None


def test_uncommitted_work_is_rolled_back(agents_engine):
    with SqlUnitOfWork(agents_engine) as uow:
        uow.agents.add(make_agent(1))
    with SqlUnitOfWork(agents_engine) as uow:
        assert uow.agents.get_by_hostname("host-001") is None


def test_update_replaces_labels_and_touch_moves_only_the_heartbeat(agents_engine):
    agent = make_agent(1, {"env": "prod", "role": "db"})
    with SqlUnitOfWork(agents_engine) as uow:
        uow.agents.add(agent)
        uow.agents.update(replace(agent, labels={"env": "dev"}, agent_version="2.0"))
        uow.agents.touch(agent.agent_id, NOW + 5000)
        uow.commit()
    with SqlUnitOfWork(agents_engine) as uow:
        stored = uow.agents.get(agent.agent_id)
    assert stored.labels == {"env": "dev"}
    assert stored.agent_version == "2.0"
    assert stored.last_heartbeat_at_ms == NOW + 5000


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (frozenset(), ["host-001", "host-002", "host-003"]),
        (frozenset({AgentStatus.ONLINE}), ["host-001"]),
        (frozenset({AgentStatus.STALE}), ["host-002"]),
        (frozenset({AgentStatus.OFFLINE}), ["host-003"]),
        (frozenset({AgentStatus.DEREGISTERED}), ["host-004"]),
        (frozenset({AgentStatus.STALE, AgentStatus.OFFLINE}), ["host-002", "host-003"]),
    ],
)
def test_status_filter_in_sql_matches_the_domain_rule(agents_engine, statuses, expected):
    agents = [
        make_agent(1, seen_ms=NOW - 5_000),
        make_agent(2, seen_ms=NOW - 30_000),
        make_agent(3, seen_ms=NOW - 120_000),
        replace(make_agent(4), deregistered_at_ms=NOW),
    ]
    with SqlUnitOfWork(agents_engine) as uow:
        for agent in agents:
            uow.agents.add(agent)
        uow.commit()
        listed = uow.agents.list(AgentQuery(statuses=statuses), POLICY, NOW)
    assert [a.hostname for a in listed] == expected
    for agent in listed:
        assert POLICY.status_of(agent, NOW) in (statuses or set(AgentStatus) - {AgentStatus.DEREGISTERED})


def test_label_filter_requires_every_label(agents_engine):
    with SqlUnitOfWork(agents_engine) as uow:
        uow.agents.add(make_agent(1, {"env": "prod", "role": "db"}))
        uow.agents.add(make_agent(2, {"env": "prod", "role": "web"}))
        uow.agents.add(make_agent(3, {"env": "dev", "role": "db"}))
        uow.commit()
        listed = uow.agents.list(AgentQuery(labels={"env": "prod", "role": "db"}), POLICY, NOW)
    assert [a.hostname for a in listed] == ["host-001"]
    assert listed[0].labels == {"env": "prod", "role": "db"}


def test_list_returns_one_more_than_the_page_after_the_cursor(agents_engine):
    with SqlUnitOfWork(agents_engine) as uow:
        for n in range(1, 8):
            uow.agents.add(make_agent(n))
        uow.commit()
        listed = uow.agents.list(AgentQuery(page_size=3, after_hostname="host-002"), POLICY, NOW)
    assert [a.hostname for a in listed] == ["host-003", "host-004", "host-005", "host-006"]


def test_the_sql_status_filter_discounts_our_downtime_as_the_domain_rule_does(agents_engine):
    from services.agents.domain import Downtime

    policy = LivenessPolicy(heartbeat_interval_s=10, downtime=Downtime(resumed_at_ms=NOW - 1_000, paused_ms=60_000))
    agents = [
        make_agent(1, seen_ms=NOW - 61_000),  # heard just before the downtime: judged afresh
        make_agent(2, seen_ms=NOW - 200_000),  # silent long before: still late
        make_agent(3, seen_ms=NOW - 500),  # heard since the start: as it is
    ]
    with SqlUnitOfWork(agents_engine) as uow:
        for agent in agents:
            uow.agents.add(agent)
        uow.commit()
        for status in (AgentStatus.ONLINE, AgentStatus.STALE, AgentStatus.OFFLINE):
            listed = uow.agents.list(AgentQuery(statuses=frozenset({status})), policy, NOW)
            assert [a.hostname for a in listed] == [a.hostname for a in agents if policy.status_of(a, NOW) is status]
        online = uow.agents.list(AgentQuery(statuses=frozenset({AgentStatus.ONLINE})), policy, NOW)
        assert [a.hostname for a in online] == ["host-001", "host-003"]
        assert uow.agents.newest_heartbeat_ms() == NOW - 500


def test_counts_by_status_are_the_domain_rule_counted_in_sql_and_silent_agents_list_newest_first(agents_engine):
    from services.agents.domain import Downtime

    policy = LivenessPolicy(heartbeat_interval_s=10, downtime=Downtime(resumed_at_ms=NOW - 1_000, paused_ms=60_000))
    agents = [make_agent(n, seen_ms=NOW - n * 7_919 % 400_000) for n in range(1, 60)]
    agents += [replace(make_agent(90), deregistered_at_ms=NOW)]
    with SqlUnitOfWork(agents_engine) as uow:
        assert uow.agents.count_by_status(policy, NOW) == dict.fromkeys(AgentStatus, 0)
        for agent in agents:
            uow.agents.add(agent)
        uow.commit()
        counts = uow.agents.count_by_status(policy, NOW)
        silent = frozenset({AgentStatus.STALE, AgentStatus.OFFLINE})
        newest = uow.agents.list(AgentQuery(statuses=silent, page_size=5, newest_heartbeat_first=True), policy, NOW)
    expected = dict.fromkeys(AgentStatus, 0)
    for agent in agents:
        expected[policy.status_of(agent, NOW)] += 1
    assert counts == expected and all(expected[s] for s in AgentStatus)
    by_recency = sorted(
        (a for a in agents if policy.status_of(a, NOW) in silent), key=lambda a: (-a.last_heartbeat_at_ms, a.hostname)
    )
    assert [a.hostname for a in newest] == [a.hostname for a in by_recency[:5]]
