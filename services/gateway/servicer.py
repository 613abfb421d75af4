"""gRPC edge of the gateway: proto in, one use case, proto out."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from infrawatch.agents.v1 import agents_pb2
from infrawatch.gateway.v1 import gateway_pb2 as pb
from infrawatch.gateway.v1 import gateway_pb2_grpc
from services.common.metadata import bearer_token
from services.gateway import service
from services.gateway.clients import Budget
from services.gateway.service import AgentRef, GatewayContext

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["OperatorService"].full_name


def _budget(context: grpc.ServicerContext) -> Budget:
    return Budget(context.time_remaining())


def _ref(message: pb.AgentRef) -> AgentRef:
    return AgentRef(agent_id=message.agent_id, hostname=message.hostname)


class OperatorServicer(gateway_pb2_grpc.OperatorServiceServicer):
    def __init__(self, ctx: GatewayContext) -> None:
        self._ctx = ctx

    def GetFleetOverview(
        self, request: pb.GetFleetOverviewRequest, context: grpc.ServicerContext
    ) -> pb.GetFleetOverviewResponse:
        return service.fleet_overview(
            self._ctx, bearer_token(context), request.top_metric, request.top_n, request.recent_limit, _budget(context)
        )

    def ListAgents(self, request: pb.ListAgentsRequest, context: grpc.ServicerContext) -> pb.ListAgentsResponse:
        downstream = agents_pb2.ListAgentsRequest(
            statuses=request.statuses,
            label_selector=request.label_selector,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        views, token, availability = service.list_agents(self._ctx, bearer_token(context), downstream, _budget(context))
        return pb.ListAgentsResponse(agents=views, next_page_token=token, metrics=availability)

    def GetAgent(self, request: pb.GetAgentRequest, context: grpc.ServicerContext) -> pb.GetAgentResponse:
        view = service.get_agent(self._ctx, bearer_token(context), _ref(request.agent), _budget(context))
        return pb.GetAgentResponse(agent=view)

    def QueryAgentMetrics(
        self, request: pb.QueryAgentMetricsRequest, context: grpc.ServicerContext
    ) -> pb.QueryAgentMetricsResponse:
        agent, series = service.query_agent_metrics(
            self._ctx, bearer_token(context), _ref(request.agent), request, _budget(context)
        )
        return pb.QueryAgentMetricsResponse(agent=agent, series=series)

    def QueryMetrics(self, request: pb.QueryMetricsRequest, context: grpc.ServicerContext) -> pb.QueryMetricsResponse:
        result = service.query_metrics(self._ctx, bearer_token(context), request.query, _budget(context))
        return pb.QueryMetricsResponse(result=result)

    def WatchAgent(
        self, request: pb.WatchAgentRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchAgentResponse]:
        yield from service.watch_agent(
            self._ctx,
            bearer_token(context),
            _ref(request.agent),
            request.metric_selector,
            context.is_active,
            _budget(context),
        )

    def DeregisterAgent(
        self, request: pb.DeregisterAgentRequest, context: grpc.ServicerContext
    ) -> pb.DeregisterAgentResponse:
        agent = service.deregister_agent(self._ctx, bearer_token(context), _ref(request.agent), _budget(context))
        return pb.DeregisterAgentResponse(agent=agent)
