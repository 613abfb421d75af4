"""Use cases of the agents context. Each runs in one unit of work."""

from __future__ import annotations

import base64
import binascii
import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from services.agents.domain import (
    Agent,
    AgentQuery,
    AgentStatus,
    Inventory,
    LivenessPolicy,
    Registration,
    hash_token,
    new_token,
    validate_agent_id,
    validate_labels,
    validate_page_size,
    validate_registration,
)
from services.agents.ports import UnitOfWork
from services.common.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated

UnitOfWorkFactory = Callable[[], UnitOfWork]
Clock = Callable[[], int]


@dataclass(frozen=True)
class AgentsContext:
    """What every use case needs: storage, the clock (epoch ms) and the liveness policy."""

    uow: UnitOfWorkFactory
    now_ms: Clock
    policy: LivenessPolicy
    operator_token: str = ""


@dataclass(frozen=True)
class AgentPage:
    agents: list[Agent]
    next_page_token: str


def register_agent(ctx: AgentsContext, registration: Registration) -> tuple[Agent, str]:
    """Register a host, or re-register a known hostname under the same id with a new token."""
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
        else:
            agent = existing.reregistered(registration, hash_token(token), now)
            uow.agents.update(agent)
        uow.commit()
    return agent, token


def _authenticated_agent(uow: UnitOfWork, agent_id: str, token: str) -> Agent:
    validate_agent_id(agent_id)
    agent = uow.agents.get(agent_id)
    if agent is None or agent.deregistered_at_ms is not None:
        raise NotFound(f"agent {agent_id} is not registered")
    if not token:
        raise Unauthenticated("missing agent token; send metadata 'authorization: Bearer <agent_token>'")
    if agent.token_hash is None or not hmac.compare_digest(agent.token_hash, hash_token(token)):
        raise Unauthenticated("agent token is not valid for this agent")
    return agent


def heartbeat(ctx: AgentsContext, agent_id: str, token: str, inventory: Inventory | None) -> Agent:
    """Record that the agent is alive, optionally refreshing its inventory."""
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
        is_operator = bool(ctx.operator_token) and hmac.compare_digest(ctx.operator_token, token)
        is_self = agent.token_hash is not None and hmac.compare_digest(agent.token_hash, hash_token(token))
        if not (is_operator or is_self):
            raise PermissionDenied("only the agent itself or an operator may deregister this agent")
        if agent.deregistered_at_ms is None:
            agent = replace(agent, deregistered_at_ms=now, token_hash=None)
            uow.agents.update(agent)
            uow.commit()
    return agent


def get_agent(ctx: AgentsContext, agent_id: str, hostname: str = "") -> Agent:
    """One agent by id, or by hostname when no id is given."""
    if not agent_id and hostname:
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
        return base64.b64decode(page_token.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("page_token is not a token returned by ListAgents") from None


def _encode_page_token(hostname: str) -> str:
    return base64.urlsafe_b64encode(hostname.encode()).decode()


def list_agents(
    ctx: AgentsContext,
    statuses: frozenset[AgentStatus],
    labels: dict[str, str],
    page_size: int,
    page_token: str,
) -> AgentPage:
    """One page of agents in hostname order, filtered by status and exact label values."""
    validate_labels(labels, "label_selector")
    query = AgentQuery(
        statuses=statuses,
        labels=labels,
        page_size=validate_page_size(page_size),
        after_hostname=_decode_page_token(page_token),
    )
    with ctx.uow() as uow:
        agents = uow.agents.list(query, ctx.policy, ctx.now_ms())
    if len(agents) > query.page_size:
        agents = agents[: query.page_size]
        return AgentPage(agents, _encode_page_token(agents[-1].hostname))
    return AgentPage(agents, "")


def authenticate_agent(ctx: AgentsContext, token: str) -> Agent:
    """The live agent a token belongs to; UNAUTHENTICATED for anything else."""
    if not token:
        raise Unauthenticated("agent_token is required")
    with ctx.uow() as uow:
        agent = uow.agents.get_by_token_hash(hash_token(token))
    if agent is None or agent.deregistered_at_ms is not None:
        raise Unauthenticated("agent token is not valid")
    return agent
