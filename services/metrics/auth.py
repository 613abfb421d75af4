"""Agent authentication for ingest, through the agents service's typed stub, cached.

The metrics service never sees the agents' tables: it asks AuthenticateAgent.
A verified token is remembered for `ttl_s`, so a long-lived stream costs one
call per TTL, not one per batch; revoking a token therefore takes effect
within the TTL.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from services.common.clients import call_idempotent
from services.common.errors import Unauthenticated, Unavailable


@dataclass(frozen=True)
class AgentIdentity:
    agent_id: str
    hostname: str


class AgentsClient:
    """Typed access to the agents service with deadlines and retries."""

    def __init__(self, channel: grpc.Channel, timeout_s: float, stop: threading.Event | None = None) -> None:
        self._stub = agents_pb2_grpc.AgentServiceStub(channel)
        self._timeout_s = timeout_s
        self._stop = stop

    def authenticate(self, token: str) -> AgentIdentity:
        request = agents_pb2.AuthenticateAgentRequest(agent_token=token)
        try:
            reply = call_idempotent(
                lambda timeout: self._stub.AuthenticateAgent(request, timeout=timeout),
                timeout_s=self._timeout_s,
                stop=self._stop,
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise Unauthenticated("agent token is not valid") from None
            raise Unavailable(f"agents service unavailable, cannot verify the agent token ({code})") from None
        return AgentIdentity(reply.agent_id, reply.hostname)


class CachedAuthenticator:
    def __init__(
        self,
        authenticate: Callable[[str], AgentIdentity],
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._authenticate = authenticate
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[AgentIdentity, float]] = {}
        self._lookups: dict[str, threading.Lock] = {}

    def identify(self, token: str) -> AgentIdentity:
        """The agent owning `token`; raises Unauthenticated (or Unavailable) otherwise.

        Concurrent misses for one token make one call: a fleet reconnecting at once (after a
        metrics restart) asks the agents service once per agent, not once per stream."""
        if not token:
            raise Unauthenticated("missing agent token; send metadata 'authorization: Bearer <agent_token>'")
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[1] > self._clock():
                return cached[0]
            lookup = self._lookups.setdefault(key, threading.Lock())
        with lookup:
            with self._lock:
                cached = self._cache.get(key)
            now = self._clock()
            if cached is not None and cached[1] > now:
                return cached[0]
            try:
                identity = self._authenticate(token)
            finally:
                with self._lock:
                    self._lookups.pop(key, None)
            with self._lock:
                self._cache[key] = (identity, now + self._ttl_s)
            return identity
