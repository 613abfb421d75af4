"""Agents, their liveness and their credentials, free of any transport or storage concern."""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field, replace

from services.common.errors import InvalidArgument
from services.common.labels import LABEL_NAME_RULE, is_label_name
from services.common.text import NUL_RULE, holds_nul

MAX_HOSTNAME = 253
MAX_VERSION = 64
MAX_OS = 64
MAX_ARCH = 32
MAX_KERNEL = 128
MAX_LABELS = 32
MAX_LABEL_NAME = 63
MAX_LABEL_VALUE = 256
MAX_PAGE_SIZE = 1000
# Inventory numbers are stored in signed 32/64-bit columns (SQLite and PostgreSQL alike).
MAX_CPU_COUNT = 2**31 - 1
MAX_MEMORY_BYTES = 2**63 - 1
DEFAULT_PAGE_SIZE = 100

_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TOKEN_PREFIX = "iwa_"
REMOTE_WRITE_TOKEN_PREFIX = "iwr_"
MAX_CREDENTIAL_NAME = 100
_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class AgentStatus(enum.Enum):
    ONLINE = "online"
    STALE = "stale"
    OFFLINE = "offline"
    DEREGISTERED = "deregistered"


@dataclass(frozen=True)
class Inventory:
    """Hardware and software facts the agent reports about its host."""

    cpu_count: int = 0
    memory_total_bytes: int = 0
    kernel_version: str = ""
    boot_time_ms: int = 0


@dataclass(frozen=True)
class Registration:
    """What a host says about itself when it registers."""

    hostname: str
    agent_version: str = ""
    os: str = ""
    arch: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    inventory: Inventory = field(default_factory=Inventory)


@dataclass(frozen=True)
class Agent:
    """A registered host agent. Times are milliseconds since the Unix epoch."""

    agent_id: str
    hostname: str
    agent_version: str
    os: str
    arch: str
    labels: dict[str, str]
    inventory: Inventory
    registered_at_ms: int
    last_heartbeat_at_ms: int
    token_hash: str | None
    deregistered_at_ms: int | None = None
    registration_approved: bool = False
    refused_registrations: int = 0
    last_refused_registration_at_ms: int | None = None

    def may_register_again(self, presented_token_hash: str | None) -> bool:
        """A hostname already registered is taken over only by the host that holds its current
        token, or after an operator approved it (a reinstalled machine, a deregistered host let back)."""
        return self.registration_approved or self.holds_token(presented_token_hash)

    def holds_token(self, presented_token_hash: str | None) -> bool:
        """Whether a presented token (by its hash) is this agent's current one."""
        if self.token_hash is None or presented_token_hash is None:
            return False
        return hmac.compare_digest(self.token_hash, presented_token_hash)

    def refused(self, now_ms: int) -> Agent:
        """The agent after a registration of its hostname was refused, which operators see."""
        return replace(
            self,
            refused_registrations=self.refused_registrations + 1,
            last_refused_registration_at_ms=now_ms,
        )

    def approved(self) -> Agent:
        return replace(self, registration_approved=True)

    def reregistered(self, registration: Registration, token_hash: str, now_ms: int) -> Agent:
        """The same agent after its host registered again: new metadata, new token, alive."""
        return replace(
            self,
            registration_approved=False,
            agent_version=registration.agent_version,
            os=registration.os,
            arch=registration.arch,
            labels=dict(registration.labels),
            inventory=registration.inventory,
            token_hash=token_hash,
            last_heartbeat_at_ms=now_ms,
            deregistered_at_ms=None,
        )


@dataclass
class Downtime:
    """How long the agents service was not running before this process started: no heartbeat
    could arrive meanwhile, so heartbeats from before the start count as that much later. A
    host that was heartbeating when the service stopped is judged afresh (it has its usual
    intervals to heartbeat again) instead of looking late because of our own restart; a host
    that was already silent stays as late as it was."""

    resumed_at_ms: int = 0
    paused_ms: int = 0

    def effective(self, heartbeat_at_ms: int) -> int:
        if self.paused_ms and heartbeat_at_ms < self.resumed_at_ms:
            return heartbeat_at_ms + self.paused_ms
        return heartbeat_at_ms


def downtime_at_start(newest_heartbeat_ms: int | None, started_at_ms: int) -> Downtime:
    """The downtime a process starting at `started_at_ms` infers from the newest heartbeat the
    store holds (when the previous process, or the last replica, stopped hearing hosts). With
    another replica running, that heartbeat is fresh and the downtime is nothing."""
    if newest_heartbeat_ms is None:
        return Downtime()
    return Downtime(started_at_ms, max(0, started_at_ms - newest_heartbeat_ms))


@dataclass(frozen=True)
class LivenessPolicy:
    """How old a last heartbeat may be for each status, in heartbeat intervals; the service's own
    downtime does not count (see Downtime)."""

    heartbeat_interval_s: int = 10
    stale_after_intervals: float = 2
    offline_after_intervals: float = 5
    downtime: Downtime = field(default_factory=Downtime)

    def online_since_ms(self, now_ms: int) -> int:
        """Heartbeats at or after this instant mean ONLINE."""
        return now_ms - int(self.stale_after_intervals * self.heartbeat_interval_s * 1000)

    def stale_since_ms(self, now_ms: int) -> int:
        """Heartbeats at or after this instant (and before online_since_ms) mean STALE."""
        return now_ms - int(self.offline_after_intervals * self.heartbeat_interval_s * 1000)

    def status_of(self, agent: Agent, now_ms: int) -> AgentStatus:
        if agent.deregistered_at_ms is not None:
            return AgentStatus.DEREGISTERED
        beat = self.downtime.effective(agent.last_heartbeat_at_ms)
        if beat >= self.online_since_ms(now_ms):
            return AgentStatus.ONLINE
        if beat >= self.stale_since_ms(now_ms):
            return AgentStatus.STALE
        return AgentStatus.OFFLINE


@dataclass(frozen=True)
class AgentQuery:
    """A page request of ListAgents: statuses to keep (empty: all but DEREGISTERED), labels to match."""

    statuses: frozenset[AgentStatus] = frozenset()
    labels: dict[str, str] = field(default_factory=dict)
    page_size: int = DEFAULT_PAGE_SIZE
    after_hostname: str = ""
    # One page of the agents heard from last, instead of hostname order (after_hostname unused).
    newest_heartbeat_first: bool = False


def new_token(prefix: str = TOKEN_PREFIX) -> str:
    """A fresh token: 256 random bits, prefixed so leaked tokens are recognisable (and which kind)."""
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class RemoteWriteCredential:
    """A Prometheus remote-write sender's credential: it may write series of many hosts."""

    credential_id: str
    name: str
    token_hash: str
    created_at_ms: int
    revoked_at_ms: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at_ms is not None


def validate_credential_name(name: str) -> None:
    if not name:
        raise InvalidArgument("name is required: say what the sender is, e.g. prometheus-eu-1")
    _check_length("name", name, MAX_CREDENTIAL_NAME)
    if not _CREDENTIAL_NAME.match(name):
        raise InvalidArgument(f"name {name[:80]!r} is invalid; use letters, digits, '.', '-' and '_'")


def hash_token(token: str) -> str:
    """The stored form of a token. Tokens are random 256-bit secrets, so a plain SHA-256
    is not open to dictionary attacks and keeps lookups by hash cheap."""
    return hashlib.sha256(token.encode()).hexdigest()


def _check_length(field_name: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidArgument(f"{field_name} is {len(value)} characters long; the limit is {limit}")
    if holds_nul(value):
        raise InvalidArgument(f"{field_name} {NUL_RULE}")


def validate_labels(labels: dict[str, str], field_name: str = "labels") -> None:
    """Reject label sets an operator could not query or that would bloat the store."""
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"{field_name} has {len(labels)} entries; the limit is {MAX_LABELS}")
    for name, value in labels.items():
        if not is_label_name(name) or len(name) > MAX_LABEL_NAME:
            raise InvalidArgument(
                f"{field_name}: label name {name[:80]!r} is invalid; names match {LABEL_NAME_RULE} "
                f"and are at most {MAX_LABEL_NAME} characters"
            )
        _check_length(f"{field_name}[{name}]", value, MAX_LABEL_VALUE)


def validate_hostname(hostname: str) -> None:
    if not hostname:
        raise InvalidArgument("hostname is required")
    _check_length("hostname", hostname, MAX_HOSTNAME)
    if not _HOSTNAME.match(hostname):
        raise InvalidArgument(f"hostname {hostname[:80]!r} is invalid; use letters, digits, '.', '-' and '_'")


def validate_registration(registration: Registration) -> None:
    """Raise InvalidArgument naming the first field that breaks a rule."""
    validate_hostname(registration.hostname)
    _check_length("agent_version", registration.agent_version, MAX_VERSION)
    _check_length("os", registration.os, MAX_OS)
    _check_length("arch", registration.arch, MAX_ARCH)
    validate_inventory(registration.inventory)
    validate_labels(registration.labels)


def validate_inventory(inventory: Inventory) -> None:
    _check_length("inventory.kernel_version", inventory.kernel_version, MAX_KERNEL)
    if inventory.cpu_count > MAX_CPU_COUNT:
        raise InvalidArgument(f"inventory.cpu_count is {inventory.cpu_count}; the limit is {MAX_CPU_COUNT}")
    if inventory.memory_total_bytes > MAX_MEMORY_BYTES:
        raise InvalidArgument(
            f"inventory.memory_total_bytes is {inventory.memory_total_bytes}; the limit is {MAX_MEMORY_BYTES} (8 EiB)"
        )


def validate_agent_id(agent_id: str) -> None:
    if not agent_id:
        raise InvalidArgument("agent_id is required")
    if not _UUID.match(agent_id):
        raise InvalidArgument(f"agent_id {agent_id[:80]!r} is not a valid agent id (a lowercase UUID)")


def validate_page_size(page_size: int) -> int:
    """The page size to use: 0 means the default; above the limit is an error."""
    if page_size == 0:
        return DEFAULT_PAGE_SIZE
    if page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size is {page_size}; the limit is {MAX_PAGE_SIZE}")
    return page_size
