"""Agent authentication for ingest, through the agents service's typed stub, cached.

The metrics service never sees the agents' tables: it asks AuthenticateAgent.
A verified token is remembered for `ttl_s` (5 s by default), so a long-lived
stream costs one call per TTL, not one per batch, and revoking a token takes
effect within the TTL.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from agent.logs import event
from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from services.common.clients import call_idempotent
from services.common.errors import Unauthenticated, Unavailable

_log = logging.getLogger("infrawatch.metrics.auth")


@dataclass(frozen=True)
class AgentIdentity:
    """Who a token belongs to: an agent (writes only its own host's series: `hostname`), or a
    remote-write sender (`hostname` empty: labels are kept as sent)."""

    agent_id: str
    hostname: str


class AgentsClient:
    """Typed access to the agents service with deadlines and retries."""

    def __init__(
        self, channel: grpc.Channel, service_token: str, timeout_s: float, stop: threading.Event | None = None
    ) -> None:
        self._stub = agents_pb2_grpc.AgentServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {service_token}"),)
        self._timeout_s = timeout_s
        self._stop = stop

    def authenticate(self, token: str) -> AgentIdentity:
        request = agents_pb2.AuthenticateAgentRequest(agent_token=token)
        try:
            reply = call_idempotent(
                lambda timeout: self._stub.AuthenticateAgent(request, timeout=timeout, metadata=self._metadata),
                timeout_s=self._timeout_s,
                stop=self._stop,
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code == grpc.StatusCode.PERMISSION_DENIED:
                # This service's own credential was refused: a deployment mistake, not the agent's.
                detail = exc.details() if isinstance(exc, grpc.Call) else ""
                event(_log, "the agents service refused this service's token", logging.ERROR, detail=detail)
                raise Unavailable(
                    "cannot verify agent tokens: the agents service refused the metrics service's "
                    "INFRAWATCH_SERVICE_TOKEN (it must be the same on every service)"
                ) from None
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise Unauthenticated(exc.details() if isinstance(exc, grpc.Call) else "token is not valid") from None
            raise Unavailable(f"agents service unavailable, cannot verify the agent token ({code})") from None
        if reply.may_write_any_host:
            return AgentIdentity(reply.agent_id, "")
        return AgentIdentity(reply.agent_id, reply.hostname)


class CachedAuthenticator:
    """Verified tokens, remembered for `ttl_s` (a few seconds: a revoked token stops working
    that soon). When the agents service cannot be reached, a token verified within the last
    `grace_s` keeps working — agents already streaming are not cut off by an agents outage —
    while unknown tokens are refused as UNAVAILABLE."""

    def __init__(
        self,
        authenticate: Callable[[str], AgentIdentity],
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        grace_s: float = 900.0,
    ) -> None:
        self._authenticate = authenticate
        self._ttl_s = ttl_s
        self._grace_s = grace_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, _Verified] = {}
        self._lookups: dict[str, threading.Lock] = {}
        self.agents_unreachable_since: float | None = None

    def cached(self, token: str) -> AgentIdentity | None:
        """The identity of `token` when it was verified within the TTL, else None; never blocks
        (an event loop can call it and go to a thread only for the call to the agents service)."""
        if not token:
            return None
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.fresh_until > self._clock():
                return cached.identity
        return None

    def identify(self, token: str) -> AgentIdentity:
        """The agent owning `token`; raises Unauthenticated (or Unavailable) otherwise.

        Concurrent misses for one token make one call: a fleet reconnecting at once (after a
        metrics restart) asks the agents service once per agent, not once per stream."""
        if not token:
            raise Unauthenticated("missing agent token; send metadata 'authorization: Bearer <agent_token>'")
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.fresh_until > self._clock():
                return cached.identity
            lookup = self._lookups.setdefault(key, threading.Lock())
        with lookup:
            return self._verify(key, token)

    def _verify(self, key: str, token: str) -> AgentIdentity:
        with self._lock:
            cached = self._cache.get(key)
        now = self._clock()
        if cached is not None and cached.fresh_until > now:
            return cached.identity  # verified by the call this one waited for
        try:
            identity = self._authenticate(token)
        except Unauthenticated:
            with self._lock:
                self._cache.pop(key, None)
            raise
        except Unavailable:
            if cached is None or now - cached.verified_at > self._grace_s:
                raise
            if self.agents_unreachable_since is None:
                self.agents_unreachable_since = now
                event(
                    _log,
                    "agents service unreachable; agents verified recently keep streaming",
                    logging.WARNING,
                    grace_s=self._grace_s,
                )
            with self._lock:  # asked again after another TTL, not on every batch
                self._cache[key] = _Verified(cached.identity, now + self._ttl_s, cached.verified_at)
            return cached.identity
        finally:
            with self._lock:
                self._lookups.pop(key, None)
        if self.agents_unreachable_since is not None:
            self.agents_unreachable_since = None
            event(_log, "agents service reachable again")
        with self._lock:
            self._cache[key] = _Verified(identity, now + self._ttl_s, now)
        return identity


@dataclass(frozen=True)
class _Verified:
    identity: AgentIdentity
    fresh_until: float
    verified_at: float
