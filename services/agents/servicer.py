"""gRPC edge of the agents context: proto in, one use case, proto out."""

from __future__ import annotations

import grpc

from infrawatch.agents.v1 import agents_pb2 as pb
from infrawatch.agents.v1 import agents_pb2_grpc
from services.agents import service
from services.agents.domain import Agent, AgentStatus, Inventory, Registration, RemoteWriteCredential
from services.agents.service import AgentsContext
from services.common.errors import InvalidArgument
from services.common.metadata import bearer_token
from services.common.timestamps import to_epoch_ms, to_timestamp

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AgentService"].full_name

_STATUS_TO_PROTO = {
    AgentStatus.ONLINE: pb.AGENT_STATUS_ONLINE,
    AgentStatus.STALE: pb.AGENT_STATUS_STALE,
    AgentStatus.OFFLINE: pb.AGENT_STATUS_OFFLINE,
    AgentStatus.DEREGISTERED: pb.AGENT_STATUS_DEREGISTERED,
}
_STATUS_FROM_PROTO = {value: key for key, value in _STATUS_TO_PROTO.items()}


def _inventory_from(message: pb.Inventory) -> Inventory:
    return Inventory(
        cpu_count=message.cpu_count,
        memory_total_bytes=message.memory_total_bytes,
        kernel_version=message.kernel_version,
        boot_time_ms=to_epoch_ms(message.boot_time, "boot_time") if message.HasField("boot_time") else 0,
    )


def _statuses_from(values: list[int]) -> frozenset[AgentStatus]:
    statuses = set()
    for value in values:
        if value not in _STATUS_FROM_PROTO:
            raise InvalidArgument(f"statuses: {value} is not a valid AgentStatus")
        statuses.add(_STATUS_FROM_PROTO[value])
    return frozenset(statuses)


def _credential_proto(credential: RemoteWriteCredential) -> pb.RemoteWriteCredential:
    message = pb.RemoteWriteCredential(
        credential_id=credential.credential_id, name=credential.name, created_at=to_timestamp(credential.created_at_ms)
    )
    if credential.revoked_at_ms is not None:
        message.revoked_at.CopyFrom(to_timestamp(credential.revoked_at_ms))
    return message


class AgentServicer(agents_pb2_grpc.AgentServiceServicer):
    def __init__(self, ctx: AgentsContext) -> None:
        self._ctx = ctx

    def _to_proto(self, agent: Agent) -> pb.Agent:
        message = pb.Agent(
            agent_id=agent.agent_id,
            hostname=agent.hostname,
            agent_version=agent.agent_version,
            os=agent.os,
            arch=agent.arch,
            labels=agent.labels,
            status=_STATUS_TO_PROTO[self._ctx.policy.status_of(agent, self._ctx.now_ms())],
            registered_at=to_timestamp(agent.registered_at_ms),
            last_heartbeat_at=to_timestamp(agent.last_heartbeat_at_ms),
            inventory=pb.Inventory(
                cpu_count=agent.inventory.cpu_count,
                memory_total_bytes=agent.inventory.memory_total_bytes,
                kernel_version=agent.inventory.kernel_version,
            ),
            heartbeat_interval_seconds=self._ctx.policy.heartbeat_interval_s,
            registration_approved=agent.registration_approved,
            refused_registrations=agent.refused_registrations,
        )
        if agent.last_refused_registration_at_ms is not None:
            message.last_refused_registration_at.CopyFrom(to_timestamp(agent.last_refused_registration_at_ms))
        if agent.inventory.boot_time_ms:
            message.inventory.boot_time.CopyFrom(to_timestamp(agent.inventory.boot_time_ms))
        if agent.deregistered_at_ms is not None:
            message.deregistered_at.CopyFrom(to_timestamp(agent.deregistered_at_ms))
        return message

    def RegisterAgent(
        self, request: pb.RegisterAgentRequest, context: grpc.ServicerContext
    ) -> pb.RegisterAgentResponse:
        registration = Registration(
            hostname=request.hostname,
            agent_version=request.agent_version,
            os=request.os,
            arch=request.arch,
            labels=dict(request.labels),
            inventory=_inventory_from(request.inventory),
        )
        agent, token = service.register_agent(self._ctx, registration, bearer_token(context), request.agent_token)
        return pb.RegisterAgentResponse(
            agent_id=agent.agent_id,
            agent_token=token,
            heartbeat_interval_seconds=self._ctx.policy.heartbeat_interval_s,
            agent=self._to_proto(agent),
        )

    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        inventory = _inventory_from(request.inventory) if request.HasField("inventory") else None
        service.heartbeat(self._ctx, request.agent_id, bearer_token(context), inventory)
        return pb.HeartbeatResponse(
            server_time=to_timestamp(self._ctx.now_ms()),
            heartbeat_interval_seconds=self._ctx.policy.heartbeat_interval_s,
        )

    def DeregisterAgent(
        self, request: pb.DeregisterAgentRequest, context: grpc.ServicerContext
    ) -> pb.DeregisterAgentResponse:
        agent = service.deregister_agent(self._ctx, request.agent_id, bearer_token(context))
        return pb.DeregisterAgentResponse(agent=self._to_proto(agent))

    def GetAgent(self, request: pb.GetAgentRequest, context: grpc.ServicerContext) -> pb.GetAgentResponse:
        agent = service.get_agent(self._ctx, bearer_token(context), request.agent_id, request.hostname)
        return pb.GetAgentResponse(agent=self._to_proto(agent))

    def ListAgents(self, request: pb.ListAgentsRequest, context: grpc.ServicerContext) -> pb.ListAgentsResponse:
        page = service.list_agents(
            self._ctx,
            bearer_token(context),
            statuses=_statuses_from(list(request.statuses)),
            labels=dict(request.label_selector),
            page_size=request.page_size,
            page_token=request.page_token,
            newest_heartbeat_first=request.order == pb.AGENT_ORDER_NEWEST_HEARTBEAT_FIRST,
        )
        return pb.ListAgentsResponse(
            agents=[self._to_proto(agent) for agent in page.agents],
            next_page_token=page.next_page_token,
        )

    def CountAgents(self, request: pb.CountAgentsRequest, context: grpc.ServicerContext) -> pb.CountAgentsResponse:
        counts = service.count_agents(self._ctx, bearer_token(context))
        return pb.CountAgentsResponse(
            counts=[pb.AgentStatusCount(status=_STATUS_TO_PROTO[s], count=n) for s, n in counts.items()]
        )

    def AuthenticateAgent(
        self, request: pb.AuthenticateAgentRequest, context: grpc.ServicerContext
    ) -> pb.AuthenticateAgentResponse:
        found = service.authenticate_agent(self._ctx, bearer_token(context), request.agent_token)
        if isinstance(found, RemoteWriteCredential):
            return pb.AuthenticateAgentResponse(
                agent_id=found.credential_id, may_write_any_host=True, credential_name=found.name
            )
        return pb.AuthenticateAgentResponse(agent_id=found.agent_id, hostname=found.hostname, labels=found.labels)

    def CreateRemoteWriteCredential(
        self, request: pb.CreateRemoteWriteCredentialRequest, context: grpc.ServicerContext
    ) -> pb.CreateRemoteWriteCredentialResponse:
        credential, token = service.create_remote_write_credential(self._ctx, bearer_token(context), request.name)
        return pb.CreateRemoteWriteCredentialResponse(credential=_credential_proto(credential), token=token)

    def ListRemoteWriteCredentials(
        self, request: pb.ListRemoteWriteCredentialsRequest, context: grpc.ServicerContext
    ) -> pb.ListRemoteWriteCredentialsResponse:
        credentials = service.list_remote_write_credentials(self._ctx, bearer_token(context))
        return pb.ListRemoteWriteCredentialsResponse(credentials=[_credential_proto(c) for c in credentials])

    def RevokeRemoteWriteCredential(
        self, request: pb.RevokeRemoteWriteCredentialRequest, context: grpc.ServicerContext
    ) -> pb.RevokeRemoteWriteCredentialResponse:
        credential = service.revoke_remote_write_credential(self._ctx, bearer_token(context), request.credential)
        return pb.RevokeRemoteWriteCredentialResponse(credential=_credential_proto(credential))

    def ApproveAgent(self, request: pb.ApproveAgentRequest, context: grpc.ServicerContext) -> pb.ApproveAgentResponse:
        agent = service.approve_agent(self._ctx, request.hostname, bearer_token(context))
        return pb.ApproveAgentResponse(agent=self._to_proto(agent))
