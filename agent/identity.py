"""The agent's identity: registration, the state file that keeps it across restarts, heartbeats."""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import psutil

from agent import VERSION
from agent.backoff import Backoff
from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc

_log = logging.getLogger("infrawatch.agent")


@dataclass(frozen=True)
class Identity:
    agent_id: str
    token: str
    hostname: str


def inventory() -> agents_pb2.Inventory:
    facts = agents_pb2.Inventory(
        cpu_count=psutil.cpu_count() or 0,
        memory_total_bytes=psutil.virtual_memory().total,
        kernel_version=platform.release()[:128],
    )
    facts.boot_time.FromSeconds(int(psutil.boot_time()))
    return facts


class StateFile:
    """agent_id and token in a JSON file only the agent's user can read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Identity | None:
        try:
            return Identity(**json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, identity: Identity) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            json.dump(asdict(identity), handle)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)


# Refusals an operator has to resolve (a taken hostname, a deregistered host, a wrong enrolment
# token): retried slowly, so that the agent gets in by itself once they are resolved.
_NEEDS_OPERATOR = {
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}


class Registrar:
    """Knows the current identity; registers (again) when there is none or the server rejects it.

    Registering needs the platform's enrolment token. A hostname already registered keeps its id
    and gets a new token when the agent presents its current token (or an operator approved it),
    so the agent's own identity heals itself while another machine cannot take it over.
    """

    def __init__(
        self,
        stub: agents_pb2_grpc.AgentServiceStub,
        state: StateFile,
        hostname: str,
        labels: dict[str, str],
        timeout_s: float,
        stop: threading.Event,
        enrollment_token: str = "",
    ) -> None:
        self._stub = stub
        self._enrollment = (("authorization", f"Bearer {enrollment_token}"),)
        self._state = state
        self._hostname = hostname
        self._labels = labels
        self._timeout_s = timeout_s
        self._halt = stop
        self._lock = threading.Lock()
        self._identity: Identity | None = None
        self.heartbeat_interval_s = 10.0

    def current(self) -> Identity | None:
        """The identity to use, registering first if needed; None only when stopping."""
        with self._lock:
            if self._identity is None:
                stored = self._state.load()
                if stored is not None and stored.hostname == self._hostname:
                    self._identity = stored
                    _log.info("reusing identity", extra={"fields": {"agent_id": stored.agent_id}})
                else:
                    self._identity = self._register(stored.token if stored is not None else "")
            return self._identity

    def renew(self, rejected: Identity) -> Identity | None:
        """Register again because the server rejected `rejected` (unless another thread already did)."""
        with self._lock:
            if self._identity == rejected:
                self._identity = self._register(rejected.token)
            return self._identity

    def _register(self, current_token: str) -> Identity | None:
        backoff = Backoff()
        slow = Backoff(base_s=5.0, cap_s=60.0)
        request = agents_pb2.RegisterAgentRequest(
            hostname=self._hostname,
            agent_version=VERSION,
            os=platform.system().lower(),
            arch=platform.machine(),
            labels=self._labels,
            inventory=inventory(),
            agent_token=current_token,
        )
        while not self._halt.is_set():
            try:
                reply = self._stub.RegisterAgent(request, timeout=self._timeout_s, metadata=self._enrollment)
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise SystemExit(f"infrawatch-agent: registration refused: {exc.details()}") from None
                if code in _NEEDS_OPERATOR:
                    delay = slow.next_delay() + 5.0
                    _log.error(
                        "registration refused; retrying until an operator resolves it",
                        extra={"fields": {"code": code.name, "reason": exc.details(), "retry_in_s": round(delay, 1)}},
                    )
                elif code == grpc.StatusCode.UNIMPLEMENTED:
                    delay = slow.next_delay() + 5.0
                    _log.error(
                        "this address is not an InfraWatch agents service (it does not know RegisterAgent); "
                        "check --agents-address",
                        extra={"fields": {"retry_in_s": round(delay, 1)}},
                    )
                else:
                    delay = backoff.next_delay()
                    _log.warning(
                        "registration failed; retrying",
                        extra={"fields": {"code": code.name, "retry_in_s": round(delay, 2)}},
                    )
                if self._halt.wait(delay):
                    return None
                continue
            identity = Identity(reply.agent_id, reply.agent_token, self._hostname)
            self._state.save(identity)
            self.heartbeat_interval_s = float(reply.heartbeat_interval_seconds or 10)
            _log.info("registered", extra={"fields": {"agent_id": identity.agent_id, "hostname": self._hostname}})
            return identity
        return None


class Heartbeats(threading.Thread):
    """Sends Heartbeat at the interval the server asks for; re-registers when the server forgot us."""

    def __init__(
        self, stub: agents_pb2_grpc.AgentServiceStub, registrar: Registrar, timeout_s: float, stop: threading.Event
    ) -> None:
        super().__init__(name="heartbeats", daemon=True)
        self._stub = stub
        self._registrar = registrar
        self._timeout_s = timeout_s
        self._halt = stop

    def run(self) -> None:
        last_inventory = 0.0
        while not self._halt.is_set():
            identity = self._registrar.current()
            if identity is None:
                return
            request = agents_pb2.HeartbeatRequest(agent_id=identity.agent_id)
            if time.monotonic() - last_inventory > 3600:
                request.inventory.CopyFrom(inventory())
                last_inventory = time.monotonic()
            try:
                # wait_for_ready: while the agents service is coming back, the heartbeat goes out the
                # moment the channel reconnects rather than an interval later.
                reply = self._stub.Heartbeat(
                    request,
                    timeout=self._timeout_s,
                    metadata=(("authorization", f"Bearer {identity.token}"),),
                    wait_for_ready=True,
                )
                self._registrar.heartbeat_interval_s = float(reply.heartbeat_interval_seconds or 10)
            except grpc.RpcError as exc:
                code = exc.code()
                _log.warning("heartbeat failed", extra={"fields": {"code": code.name}})
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND):
                    self._registrar.renew(identity)
                    continue
            self._halt.wait(self._registrar.heartbeat_interval_s)
