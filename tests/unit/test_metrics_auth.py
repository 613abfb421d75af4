"""The metrics service's cache of agent tokens."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.common.errors import Unauthenticated
from services.metrics.auth import AgentIdentity, CachedAuthenticator


def test_streams_opening_at_once_with_one_token_ask_the_agents_service_once():
    calls = []
    release = threading.Event()

    def authenticate(token: str) -> AgentIdentity:
        calls.append(token)
        release.wait(5)
        return AgentIdentity("agent-1", "host-1")

    cache = CachedAuthenticator(authenticate, ttl_s=60)
    with ThreadPoolExecutor(8) as pool:
        waiting = [pool.submit(cache.identify, "iwa_token") for _ in range(8)]
        time.sleep(0.2)
        release.set()
        identities = {future.result(5) for future in waiting}
    assert identities == {AgentIdentity("agent-1", "host-1")}
    assert calls == ["iwa_token"]


def test_a_rejected_token_is_asked_again_next_time():
    calls = []

    def authenticate(token: str) -> AgentIdentity:
        calls.append(token)
        raise Unauthenticated("agent token is not valid")

    cache = CachedAuthenticator(authenticate, ttl_s=60)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            cache.identify("iwa_revoked")
    assert len(calls) == 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_revoked_token_stops_working_once_its_ttl_has_passed():
    revoked = False

    def authenticate(token: str) -> AgentIdentity:
        if revoked:
            raise Unauthenticated("agent token is not valid")
        return AgentIdentity("agent-1", "host-1")

    clock = FakeClock()
    cache = CachedAuthenticator(authenticate, ttl_s=5, clock=clock)
    assert cache.identify("iwa_token").agent_id == "agent-1"
    revoked = True
    clock.now += 4
    assert cache.identify("iwa_token").agent_id == "agent-1"  # within the TTL
    clock.now += 2
    with pytest.raises(Unauthenticated):
        cache.identify("iwa_token")


def test_a_cached_identity_is_answered_without_a_call_only_within_the_ttl():
    calls = []

    def authenticate(token: str) -> AgentIdentity:
        calls.append(token)
        return AgentIdentity("writer-1", "")

    clock = FakeClock()
    cache = CachedAuthenticator(authenticate, ttl_s=5, clock=clock)
    assert cache.cached("iwr_token") is None and calls == []  # never verified: no answer, no call
    cache.identify("iwr_token")
    clock.now += 4
    assert cache.cached("iwr_token") == AgentIdentity("writer-1", "") and calls == ["iwr_token"]
    clock.now += 2
    assert cache.cached("iwr_token") is None and cache.cached("") is None


def test_while_the_agents_service_is_down_recently_verified_agents_keep_streaming_and_new_ones_wait():
    from services.common.errors import Unavailable

    down = False

    def authenticate(token: str) -> AgentIdentity:
        if down:
            raise Unavailable("agents service unavailable, cannot verify the agent token (UNAVAILABLE)")
        return AgentIdentity("agent-1", "host-1")

    clock = FakeClock()
    cache = CachedAuthenticator(authenticate, ttl_s=5, clock=clock, grace_s=60)
    cache.identify("iwa_known")
    down = True
    clock.now += 30
    assert cache.identify("iwa_known").agent_id == "agent-1"
    assert cache.agents_unreachable_since is not None
    with pytest.raises(Unavailable):
        cache.identify("iwa_unknown")
    clock.now += 40  # beyond the grace since the last successful check
    with pytest.raises(Unavailable):
        cache.identify("iwa_known")


def test_by_default_a_revocation_takes_effect_within_five_seconds():
    from services.metrics.app import MetricsConfig
    from services.metrics.settings import MetricsSettings

    assert MetricsSettings.from_env({"INFRAWATCH_SERVICE_TOKEN": "s"}).auth_cache_ttl <= 5
    assert MetricsConfig().auth_cache_ttl_s <= 5
