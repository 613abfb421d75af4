"""gRPC edge of the gateway (asyncio): proto in, one use case, proto out.

Unary calls run their use case (blocking stub calls with deadlines) on the fan-out pool;
WatchAgent is a coroutine that holds no thread while it waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from infrawatch.agents.v1 import agents_pb2
from infrawatch.alerts.v1 import alerts_pb2
from infrawatch.gateway.v1 import gateway_pb2 as pb
from infrawatch.gateway.v1 import gateway_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2
from services.common.metadata import bearer_token
from services.gateway import service
from services.gateway.clients import Budget
from services.gateway.service import AgentRef, GatewayContext

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["OperatorService"].full_name
T = TypeVar("T")


def _budget(context: grpc.aio.ServicerContext) -> Budget:
    return Budget(context.time_remaining())


def _ref(message: pb.AgentRef) -> AgentRef:
    return AgentRef(agent_id=message.agent_id, hostname=message.hostname)


class OperatorServicer(gateway_pb2_grpc.OperatorServiceServicer):
    def __init__(self, ctx: GatewayContext) -> None:
        self._ctx = ctx

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._ctx.fan_out, work, *args)

    async def GetFleetOverview(self, request: pb.GetFleetOverviewRequest, context: Any) -> pb.GetFleetOverviewResponse:
        return await self._run(
            service.fleet_overview,
            self._ctx,
            bearer_token(context),
            request.top_metric,
            request.top_n,
            request.recent_limit,
            _budget(context),
        )

    async def ListAgents(self, request: pb.ListAgentsRequest, context: Any) -> pb.ListAgentsResponse:
        downstream = agents_pb2.ListAgentsRequest(
            statuses=request.statuses,
            label_selector=request.label_selector,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        views, token, availability = await self._run(
            service.list_agents, self._ctx, bearer_token(context), downstream, _budget(context)
        )
        return pb.ListAgentsResponse(agents=views, next_page_token=token, metrics=availability)

    async def GetAgent(self, request: pb.GetAgentRequest, context: Any) -> pb.GetAgentResponse:
        view = await self._run(
            service.get_agent, self._ctx, bearer_token(context), _ref(request.agent), _budget(context)
        )
        return pb.GetAgentResponse(agent=view)

    async def QueryAgentMetrics(
        self, request: pb.QueryAgentMetricsRequest, context: Any
    ) -> pb.QueryAgentMetricsResponse:
        agent, series = await self._run(
            service.query_agent_metrics,
            self._ctx,
            bearer_token(context),
            _ref(request.agent),
            request,
            _budget(context),
        )
        return pb.QueryAgentMetricsResponse(agent=agent, series=series)

    async def QueryMetrics(self, request: pb.QueryMetricsRequest, context: Any) -> pb.QueryMetricsResponse:
        result = await self._run(
            service.query_metrics, self._ctx, bearer_token(context), request.query, _budget(context)
        )
        return pb.QueryMetricsResponse(result=result)

    async def QueryPromQL(self, request: metrics_pb2.RangeQueryRequest, context: Any) -> metrics_pb2.RangeQueryResponse:
        return await self._run(service.query_promql, self._ctx, bearer_token(context), request, _budget(context))

    async def ListMetricNames(
        self, request: metrics_pb2.ListMetricNamesRequest, context: Any
    ) -> metrics_pb2.ListMetricNamesResponse:
        return await self._run(service.list_metric_names, self._ctx, bearer_token(context), _budget(context))

    async def WatchAgent(self, request: pb.WatchAgentRequest, context: Any) -> AsyncIterator[pb.WatchAgentResponse]:
        async for response in service.watch_agent(
            self._ctx, bearer_token(context), _ref(request.agent), request.metric_selector, _budget(context)
        ):
            yield response

    async def DeregisterAgent(self, request: pb.DeregisterAgentRequest, context: Any) -> pb.DeregisterAgentResponse:
        agent = await self._run(
            service.deregister_agent, self._ctx, bearer_token(context), _ref(request.agent), _budget(context)
        )
        return pb.DeregisterAgentResponse(agent=agent)

    async def ApproveAgent(self, request: pb.ApproveAgentRequest, context: Any) -> pb.ApproveAgentResponse:
        agent = await self._run(
            service.approve_agent, self._ctx, bearer_token(context), _ref(request.agent), _budget(context)
        )
        return pb.ApproveAgentResponse(agent=agent)

    async def CreateRemoteWriteCredential(
        self, request: agents_pb2.CreateRemoteWriteCredentialRequest, context: Any
    ) -> agents_pb2.CreateRemoteWriteCredentialResponse:
        return await self._relay_credentials("CreateRemoteWriteCredential", request, context)

    async def ListRemoteWriteCredentials(
        self, request: agents_pb2.ListRemoteWriteCredentialsRequest, context: Any
    ) -> agents_pb2.ListRemoteWriteCredentialsResponse:
        return await self._relay_credentials("ListRemoteWriteCredentials", request, context)

    async def RevokeRemoteWriteCredential(
        self, request: agents_pb2.RevokeRemoteWriteCredentialRequest, context: Any
    ) -> agents_pb2.RevokeRemoteWriteCredentialResponse:
        return await self._relay_credentials("RevokeRemoteWriteCredential", request, context)

    async def _relay_credentials(self, method: str, request: Any, context: Any) -> Any:
        return await self._run(
            service.remote_write_credentials, self._ctx, bearer_token(context), method, request, _budget(context)
        )

    async def ListAlerts(self, request: alerts_pb2.ListAlertsRequest, context: Any) -> alerts_pb2.ListAlertsResponse:
        return await self._run(service.list_alerts, self._ctx, bearer_token(context), request, _budget(context))

    async def WatchAlerts(
        self, request: alerts_pb2.WatchAlertsRequest, context: Any
    ) -> AsyncIterator[alerts_pb2.WatchAlertsResponse]:
        async for response in service.watch_alerts(self._ctx, bearer_token(context), request):
            yield response

    async def ListAlertRules(self, request: alerts_pb2.ListRulesRequest, context: Any) -> alerts_pb2.ListRulesResponse:
        return await self._run(service.alert_rules, self._ctx, bearer_token(context), request, _budget(context))

    async def ReloadAlertRules(
        self, request: alerts_pb2.ReloadRulesRequest, context: Any
    ) -> alerts_pb2.ReloadRulesResponse:
        return await self._run(service.reload_alert_rules, self._ctx, bearer_token(context), _budget(context))

    async def CreateSilence(
        self, request: alerts_pb2.CreateSilenceRequest, context: Any
    ) -> alerts_pb2.CreateSilenceResponse:
        return await self._run(service.create_silence, self._ctx, bearer_token(context), request, _budget(context))

    async def ListSilences(
        self, request: alerts_pb2.ListSilencesRequest, context: Any
    ) -> alerts_pb2.ListSilencesResponse:
        return await self._run(service.list_silences, self._ctx, bearer_token(context), request, _budget(context))

    async def ExpireSilence(
        self, request: alerts_pb2.ExpireSilenceRequest, context: Any
    ) -> alerts_pb2.ExpireSilenceResponse:
        return await self._run(service.expire_silence, self._ctx, bearer_token(context), request, _budget(context))
