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
