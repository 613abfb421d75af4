import pytest

from services.agents.domain import (
    Agent,
    AgentStatus,
    Inventory,
    LivenessPolicy,
    Registration,
    hash_token,
    new_token,
    validate_registration,
)
from services.common.errors import InvalidArgument

POLICY = LivenessPolicy(heartbeat_interval_s=10, stale_after_intervals=2, offline_after_intervals=5)
NOW = 1_700_000_000_000


def agent_last_seen(seconds_ago: float, deregistered: bool = False) -> Agent:
    return Agent(
        agent_id="a",
        hostname="h",
        agent_version="",
        os="",
        arch="",
        labels={},
        inventory=Inventory(),
        registered_at_ms=0,
        last_heartbeat_at_ms=NOW - int(seconds_ago * 1000),
        token_hash=None,
        deregistered_at_ms=NOW if deregistered else None,
    )


@pytest.mark.parametrize(
    ("seconds_ago", "expected"),
    [
        (0, AgentStatus.ONLINE),
        (20, AgentStatus.ONLINE),
        (20.001, AgentStatus.STALE),
        (50, AgentStatus.STALE),
        (50.001, AgentStatus.OFFLINE),
        (86400, AgentStatus.OFFLINE),
    ],
)
def test_status_follows_the_age_of_the_last_heartbeat_in_intervals(seconds_ago, expected):
    assert POLICY.status_of(agent_last_seen(seconds_ago), NOW) is expected


def test_deregistered_agent_is_deregistered_whatever_its_heartbeat():
    assert POLICY.status_of(agent_last_seen(0, deregistered=True), NOW) is AgentStatus.DEREGISTERED


def test_tokens_are_unique_and_stored_only_as_hash():
    first, second = new_token(), new_token()
    assert first != second
    assert first.startswith("iwa_") and len(first) > 40
    assert hash_token(first) != first and len(hash_token(first)) == 64
    assert hash_token(first) == hash_token(first)


@pytest.mark.parametrize(
    ("registration", "field"),
    [
        (Registration(hostname=""), "hostname is required"),
        (Registration(hostname="h" * 254), "hostname is 254 characters long; the limit is 253"),
        (Registration(hostname="bad host"), "hostname 'bad host' is invalid"),
        (Registration(hostname="h", agent_version="v" * 65), "agent_version"),
        (Registration(hostname="h", os="o" * 65), "os"),
        (Registration(hostname="h", arch="a" * 33), "arch"),
        (Registration(hostname="h", labels={f"l{i}": "v" for i in range(33)}), "labels has 33 entries"),
        (Registration(hostname="h", labels={"1bad": "v"}), "label name '1bad' is invalid"),
        (Registration(hostname="h", labels={"has-dash": "v"}), "label name 'has-dash' is invalid"),
        (Registration(hostname="h", labels={"env": "x" * 257}), "labels[env]"),
    ],
)
def test_invalid_registration_names_the_offending_field(registration, field):
    with pytest.raises(InvalidArgument, match=field.replace("[", r"\[").replace("]", r"\]")):
        validate_registration(registration)


def test_valid_registration_passes():
    validate_registration(Registration(hostname="db-01.prod.example.com", labels={"env": "prod", "role": "db"}))


def test_a_bad_setting_is_reported_with_the_variable_and_the_rule():
    from services.agents.settings import AgentsSettings
    from services.common.config import ConfigError

    secret = {"INFRAWATCH_SERVICE_TOKEN": "s"}
    with pytest.raises(ConfigError, match="INFRAWATCH_AGENTS_PORT='abc' is invalid: must be a TCP port"):
        AgentsSettings.from_env({**secret, "INFRAWATCH_AGENTS_PORT": "abc"})
    with pytest.raises(ConfigError, match="INFRAWATCH_HEARTBEAT_INTERVAL='soon' is invalid: must be a duration"):
        AgentsSettings.from_env({**secret, "INFRAWATCH_HEARTBEAT_INTERVAL": "soon"})
    with pytest.raises(ConfigError, match="OFFLINE_AFTER_INTERVALS must be greater"):
        AgentsSettings.from_env(
            {**secret, "INFRAWATCH_STALE_AFTER_INTERVALS": "5", "INFRAWATCH_OFFLINE_AFTER_INTERVALS": "2"}
        )
    with pytest.raises(ConfigError, match="INFRAWATCH_SERVICE_TOKEN='' is invalid: must be set"):
        AgentsSettings.from_env({})
    with pytest.raises(ConfigError, match=r"INFRAWATCH_TLS_CERT='/nonexistent\.pem' is invalid: cannot read"):
        AgentsSettings.from_env({**secret, "INFRAWATCH_TLS_CERT": "/nonexistent.pem"})


def test_the_health_probe_checks_the_configured_port_of_its_own_service():
    from services.probe import candidate_addresses

    assert candidate_addresses({"INFRAWATCH_METRICS_PORT": "6000", "INFRAWATCH_AGENTS_ADDRESS": "agents:1"}) == [
        "127.0.0.1:6000"
    ]
    assert candidate_addresses({}) == ["127.0.0.1:50050", "127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:50053"]
