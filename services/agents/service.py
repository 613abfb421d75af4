"""Use cases of the agents context. Each runs in one unit of work."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from services.agents.domain import (
    REMOTE_WRITE_TOKEN_PREFIX,
    Agent,
    AgentQuery,
    AgentStatus,
    Downtime,
    Inventory,
    LivenessPolicy,
    Registration,
    RemoteWriteCredential,
    downtime_at_start,
    hash_token,
    new_token,
    validate_agent_id,
    validate_credential_name,
    validate_hostname,
    validate_inventory,
    validate_labels,
    validate_page_size,
    validate_registration,
)
from services.agents.ports import UnitOfWork
from services.common.credentials import Credentials
from services.common.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

UnitOfWorkFactory = Callable[[], UnitOfWork]
Clock = Callable[[], int]


@dataclass(frozen=True)
class AgentsContext:
    """What every use case needs: storage, the clock (epoch ms), the liveness policy and the
    secrets callers are checked against."""

    uow: UnitOfWorkFactory
    now_ms: Clock
    policy: LivenessPolicy
    credentials: Credentials = field(default_factory=Credentials)


@dataclass(frozen=True)
class AgentPage:
    agents: list[Agent]
    next_page_token: str


def resume_liveness(ctx: AgentsContext) -> Downtime:
    """At start: let the time this service was down not count against any host (see Downtime)."""
    with ctx.uow() as uow:
        newest = uow.agents.newest_heartbeat_ms()
    downtime = downtime_at_start(newest, ctx.now_ms())
    ctx.policy.downtime.resumed_at_ms, ctx.policy.downtime.paused_ms = downtime.resumed_at_ms, downtime.paused_ms
    return downtime


def register_agent(
    ctx: AgentsContext, registration: Registration, enrollment_token: str, agent_token: str = ""
) -> tuple[Agent, str]:
    """Register a host with the enrolment token. A hostname already registered keeps its id and
    gets a new token, but only for the host holding its current `agent_token` or after an
    operator approved it; any other claim is refused, counted and shown on the agent."""
    ctx.credentials.require_enrollment(enrollment_token)
    validate_registration(registration)
    token = new_token()
    now = ctx.now_ms()
    with ctx.uow() as uow:
        existing = uow.agents.get_by_hostname(registration.hostname)
        if existing is None:
            agent = Agent(
                agent_id=str(uuid.uuid4()),
                hostname=registration.hostname,
                agent_version=registration.agent_version,
                os=registration.os,
                arch=registration.arch,
                labels=dict(registration.labels),
                inventory=registration.inventory,
                registered_at_ms=now,
                last_heartbeat_at_ms=now,
                token_hash=hash_token(token),
            )
            uow.agents.add(agent)
        elif existing.may_register_again(hash_token(agent_token) if agent_token else None):
            agent = existing.reregistered(registration, hash_token(token), now)
            uow.agents.update(agent)
        else:
            uow.agents.update(existing.refused(now))
            uow.commit()
            raise _claim_refused(existing)
        uow.commit()
    return agent, token


def _claim_refused(existing: Agent) -> DomainError:
    approve = (
        f"an operator can let it in with ApproveAgent (gateway: OperatorService/ApproveAgent "
        f'{{"agent": {{"hostname": "{existing.hostname}"}}}})'
    )
    if existing.deregistered_at_ms is not None:
        return FailedPrecondition(f"host {existing.hostname} was deregistered by an operator; {approve}")
    return AlreadyExists(
        f"hostname {existing.hostname} is already registered to another agent and this request does not "
        f"carry that agent's token; if this is the same machine (reinstalled, or its state file was lost), "
        f"{approve}; otherwise give this machine another hostname"
    )


def approve_agent(ctx: AgentsContext, hostname: str, token: str) -> Agent:
    """An operator lets the next registration of a known hostname in without the host's token."""
    ctx.credentials.require_operator(token)
    validate_hostname(hostname)
    with ctx.uow() as uow:
        existing = uow.agents.get_by_hostname(hostname)
        if existing is None:
            raise NotFound(f"no agent is registered with hostname {hostname[:253]!r}; a new hostname needs no approval")
        agent = existing.approved()
        uow.agents.update(agent)
        uow.commit()
    return agent


def _authenticated_agent(uow: UnitOfWork, agent_id: str, token: str) -> Agent:
    validate_agent_id(agent_id)
    agent = uow.agents.get(agent_id)
    if agent is None or agent.deregistered_at_ms is not None:
        raise NotFound(f"agent {agent_id} is not registered")
    if not token:
        raise Unauthenticated("missing agent token; send metadata 'authorization: Bearer <agent_token>'")
    if not agent.holds_token(hash_token(token)):
        raise Unauthenticated("agent token is not valid for this agent")
    return agent


def heartbeat(ctx: AgentsContext, agent_id: str, token: str, inventory: Inventory | None) -> Agent:
    """Record that the agent is alive, optionally refreshing its inventory."""
    if inventory is not None:
        validate_inventory(inventory)
    now = ctx.now_ms()
    with ctx.uow() as uow:
        agent = _authenticated_agent(uow, agent_id, token)
        agent = replace(agent, last_heartbeat_at_ms=now)
        if inventory is not None:
            agent = replace(agent, inventory=inventory)
            uow.agents.update(agent)
        else:
            uow.agents.touch(agent_id, now)
        uow.commit()
    return agent


def deregister_agent(ctx: AgentsContext, agent_id: str, token: str) -> Agent:
    """Retire an agent; allowed with its own token or with the operator token."""
    validate_agent_id(agent_id)
    if not token:
        raise Unauthenticated("missing token; send metadata 'authorization: Bearer <agent_token or operator token>'")
    now = ctx.now_ms()
    with ctx.uow() as uow:
        agent = uow.agents.get(agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id} is not registered")
        is_self = agent.holds_token(hash_token(token))
        if not (ctx.credentials.is_operator(token) or is_self):
            raise PermissionDenied("only the agent itself or an operator may deregister this agent")
        if agent.deregistered_at_ms is None:
            agent = replace(agent, deregistered_at_ms=now, token_hash=None, registration_approved=False)
            uow.agents.update(agent)
            uow.commit()
    return agent


def get_agent(ctx: AgentsContext, token: str, agent_id: str, hostname: str = "") -> Agent:
    """One agent by id, or by hostname when no id is given."""
    ctx.credentials.require_reader(token)
    if not agent_id and hostname:
        validate_hostname(hostname)
        with ctx.uow() as uow:
            agent = uow.agents.get_by_hostname(hostname)
        if agent is None:
            raise NotFound(f"no agent is registered with hostname {hostname[:253]!r}")
        return agent
    validate_agent_id(agent_id)
    with ctx.uow() as uow:
        agent = uow.agents.get(agent_id)
    if agent is None:
        raise NotFound(f"agent {agent_id} is not registered")
    return agent


def _decode_page_token(page_token: str) -> str:
    if not page_token:
        return ""
    try:
        after = base64.b64decode(page_token.encode(), altchars=b"-_", validate=True).decode()
        validate_hostname(after)
        return after
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidArgument):
        raise InvalidArgument("page_token is not a token returned by ListAgents") from None


def _encode_page_token(hostname: str) -> str:
    return base64.urlsafe_b64encode(hostname.encode()).decode()


def list_agents(
    ctx: AgentsContext,
    token: str,
    statuses: frozenset[AgentStatus],
    labels: dict[str, str],
    page_size: int,
    page_token: str,
    newest_heartbeat_first: bool = False,
) -> AgentPage:
    """One page of agents in hostname order, filtered by status and exact label values; or the one
    page of those heard from last."""
    ctx.credentials.require_reader(token)
    validate_labels(labels, "label_selector")
    if newest_heartbeat_first and page_token:
        raise InvalidArgument("the newest-heartbeat-first order has one page only; send no page_token")
    query = AgentQuery(
        statuses=statuses,
        labels=labels,
        page_size=validate_page_size(page_size),
        after_hostname=_decode_page_token(page_token),
        newest_heartbeat_first=newest_heartbeat_first,
    )
    with ctx.uow() as uow:
        agents = uow.agents.list(query, ctx.policy, ctx.now_ms())
    if newest_heartbeat_first:
        return AgentPage(agents, "")
    if len(agents) > query.page_size:
        agents = agents[: query.page_size]
        return AgentPage(agents, _encode_page_token(agents[-1].hostname))
    return AgentPage(agents, "")


def count_agents(ctx: AgentsContext, token: str) -> dict[AgentStatus, int]:
    """Agents per status, counted by the database."""
    ctx.credentials.require_reader(token)
    with ctx.uow() as uow:
        return uow.agents.count_by_status(ctx.policy, ctx.now_ms())


def authenticate_agent(ctx: AgentsContext, service_token: str, token: str) -> Agent | RemoteWriteCredential:
    """The live agent, or the unrevoked remote-write credential, a token belongs to;
    UNAUTHENTICATED for anything else. Only InfraWatch services may ask: otherwise this would be
    an oracle for guessing or testing stolen tokens."""
    ctx.credentials.require_service(service_token, "AuthenticateAgent")
    if not token:
        raise Unauthenticated("agent_token is required")
    token_hash = hash_token(token)
    with ctx.uow() as uow:
        if token.startswith(REMOTE_WRITE_TOKEN_PREFIX):
            writer = uow.remote_writers.get_by_token_hash(token_hash)
            if writer is None or writer.revoked:
                raise Unauthenticated("remote-write token is not valid (unknown or revoked)")
            return writer
        agent = uow.agents.get_by_token_hash(token_hash)
    if agent is None or agent.deregistered_at_ms is not None:
        raise Unauthenticated("agent token is not valid")
    return agent


def create_remote_write_credential(ctx: AgentsContext, token: str, name: str) -> tuple[RemoteWriteCredential, str]:
    """A new remote-write credential and its token (returned only here)."""
    ctx.credentials.require_operator(token)
    validate_credential_name(name)
    secret = new_token(REMOTE_WRITE_TOKEN_PREFIX)
    credential = RemoteWriteCredential(str(uuid.uuid4()), name, hash_token(secret), ctx.now_ms())
    with ctx.uow() as uow:
        if uow.remote_writers.find(name) is not None:
            raise AlreadyExists(f"a remote-write credential named {name!r} exists; revoke it or choose another name")
        uow.remote_writers.add(credential)
        uow.commit()
    return credential, secret


def list_remote_write_credentials(ctx: AgentsContext, token: str) -> list[RemoteWriteCredential]:
    ctx.credentials.require_operator(token)
    with ctx.uow() as uow:
        return uow.remote_writers.list()


def revoke_remote_write_credential(ctx: AgentsContext, token: str, id_or_name: str) -> RemoteWriteCredential:
    """Revoked at once in the store; the metrics service stops accepting it within its cache TTL.
    Revoking twice keeps the first revocation time."""
    ctx.credentials.require_operator(token)
    if not id_or_name:
        raise InvalidArgument("credential is required: the credential's id or name")
    with ctx.uow() as uow:
        credential = uow.remote_writers.find(id_or_name[:MAX_LOOKUP])
        if credential is None:
            raise NotFound(f"no remote-write credential has the id or name {id_or_name[:80]!r}")
        if not credential.revoked:
            credential = replace(credential, revoked_at_ms=ctx.now_ms())
            uow.remote_writers.revoke(credential.credential_id, credential.revoked_at_ms or 0)
            uow.commit()
    return credential


MAX_LOOKUP = 100
"""Longest id or name worth looking up (names are at most 100 characters, ids 36)."""
