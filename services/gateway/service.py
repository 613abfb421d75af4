"""The operators' use cases, composed from the agents and metrics services.

The gateway owns no data: every answer is built from downstream calls. When
the metrics service cannot be reached, answers that are mostly inventory
(agents, overview) still come back, marked AVAILABILITY_UNAVAILABLE for the
metrics part; answers that are nothing but metrics fail with UNAVAILABLE
naming the dependency.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from agent.logs import event
from infrawatch.agents.v1 import agents_pb2
from infrawatch.alerts.v1 import alerts_pb2
from infrawatch.gateway.v1 import gateway_pb2 as pb
from infrawatch.metrics.v1 import metrics_pb2
from services.common.clock import wall_clock_ms
from services.common.credentials import Credentials
from services.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.common.labels import is_metric_name
from services.common.timestamps import to_epoch_ms, to_timestamp
from services.gateway.clients import Budget

_log = logging.getLogger("infrawatch.gateway")

DEFAULT_TOP_METRIC = "cpu_usage_percent"
ALL_STATUSES = (
    agents_pb2.AGENT_STATUS_ONLINE,
    agents_pb2.AGENT_STATUS_STALE,
    agents_pb2.AGENT_STATUS_OFFLINE,
    agents_pb2.AGENT_STATUS_DEREGISTERED,
)
DOWN = (agents_pb2.AGENT_STATUS_STALE, agents_pb2.AGENT_STATUS_OFFLINE)


class AgentsPort(Protocol):
    def get(self, budget: Budget, agent_id: str = "", hostname: str = "") -> agents_pb2.Agent: ...

    def list(self, request: agents_pb2.ListAgentsRequest, budget: Budget) -> agents_pb2.ListAgentsResponse: ...

    def count(self, budget: Budget) -> dict[int, int]:
        """Agents per status (agents_pb2.AgentStatus), as the agents service counts them."""
        ...

    def deregister(self, agent_id: str, operator_token: str, budget: Budget) -> agents_pb2.Agent: ...

    def approve(self, hostname: str, operator_token: str, budget: Budget) -> agents_pb2.Agent: ...

    def remote_write_credentials(self, method: str, request: Any, operator_token: str, budget: Budget) -> Any: ...


class MetricsPort(Protocol):
    def latest(
        self, selector: str, budget: Budget, highest: int = 0, since_ms: int = 0
    ) -> list[metrics_pb2.LatestSample]:
        """Newest samples; with `highest`, only the N highest values (highest first); with
        `since_ms`, only samples at or after it."""
        ...

    def query(self, request: metrics_pb2.QueryRangeRequest, budget: Budget) -> metrics_pb2.QueryRangeResponse: ...

    def promql(self, request: metrics_pb2.RangeQueryRequest, budget: Budget) -> metrics_pb2.RangeQueryResponse: ...

    def metric_names(self, budget: Budget) -> metrics_pb2.ListMetricNamesResponse: ...

    def watch(self, selector: metrics_pb2.Selector) -> AsyncIterator[metrics_pb2.WatchMetricsResponse]: ...


class AlertsPort(Protocol):
    def list(self, request: alerts_pb2.ListAlertsRequest, budget: Budget) -> alerts_pb2.ListAlertsResponse: ...

    def rules(self, request: alerts_pb2.ListRulesRequest, budget: Budget) -> alerts_pb2.ListRulesResponse: ...

    def silences(self, request: alerts_pb2.ListSilencesRequest, budget: Budget) -> alerts_pb2.ListSilencesResponse: ...

    def reload(self, operator_token: str, budget: Budget) -> alerts_pb2.ReloadRulesResponse: ...

    def create_silence(
        self, request: alerts_pb2.CreateSilenceRequest, operator_token: str, budget: Budget
    ) -> alerts_pb2.CreateSilenceResponse: ...

    def expire_silence(
        self, request: alerts_pb2.ExpireSilenceRequest, operator_token: str, budget: Budget
    ) -> alerts_pb2.ExpireSilenceResponse: ...

    def watch(self, request: alerts_pb2.WatchAlertsRequest) -> AsyncIterator[alerts_pb2.WatchAlertsResponse]: ...


@dataclass(frozen=True)
class GatewayContext:
    agents: AgentsPort
    metrics: MetricsPort
    fan_out: Executor
    key_metrics: tuple[str, ...] = ("cpu_usage_percent", "memory_used_bytes", "load1")
    credentials: Credentials = field(default_factory=Credentials)
    status_poll_s: float = 2.0
    stop: threading.Event | None = None
    alerts: AlertsPort | None = None
    now_ms: Callable[[], int] = wall_clock_ms


@dataclass(frozen=True)
class AgentRef:
    agent_id: str = ""
    hostname: str = ""


def quoted(value: str) -> str:
    """A label value as a selector string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorize_read(ctx: GatewayContext, token: str) -> None:
    ctx.credentials.require_reader(token)


def _resolve(ctx: GatewayContext, ref: AgentRef, budget: Budget) -> agents_pb2.Agent:
    if not ref.agent_id and not ref.hostname:
        raise InvalidArgument("agent: give agent.agent_id or agent.hostname")
    return ctx.agents.get(budget, agent_id=ref.agent_id, hostname=ref.hostname)


def _key_metric_selector(ctx: GatewayContext, hostnames: Sequence[str]) -> str:
    names = "|".join(re.escape(name) for name in ctx.key_metrics)
    hosts = "|".join(re.escape(host) for host in hostnames)
    return f"{{__name__=~{quoted(names)}, host=~{quoted(hosts)}}}"


def _latest_by_host(samples: Sequence[metrics_pb2.LatestSample]) -> dict[str, list[pb.MetricValue]]:
    """Each host's newest value per metric name (the first series of a name wins, in label order)."""
    found: dict[str, dict[str, pb.MetricValue]] = {}
    for sample in samples:
        labels = {label.name: label.value for label in sample.labels}
        per_host = found.setdefault(labels.get("host", ""), {})
        name = labels.get("__name__", "")
        if name not in per_host:
            stamp = Timestamp()
            stamp.FromMilliseconds(sample.timestamp_ms)
            per_host[name] = pb.MetricValue(name=name, value=sample.value, sampled_at=stamp)
    return {host: list(values.values()) for host, values in found.items()}


def _latest_or_unavailable(
    fetch: Callable[[], Sequence[metrics_pb2.LatestSample]],
) -> tuple[dict[str, list[pb.MetricValue]], int]:
    """Latest values by host, or nothing and AVAILABILITY_UNAVAILABLE when the metrics service is down."""
    try:
        return _latest_by_host(fetch()), pb.AVAILABILITY_AVAILABLE
    except Unavailable as exc:
        event(_log, "answering without metrics", logging.WARNING, reason=str(exc))
        return {}, pb.AVAILABILITY_UNAVAILABLE


def _views(ctx: GatewayContext, agents: Sequence[agents_pb2.Agent], budget: Budget) -> tuple[list[pb.AgentView], int]:
    """Agents joined with their latest key metrics; metrics marked unavailable if they cannot be had."""
    if not agents:
        return [], pb.AVAILABILITY_AVAILABLE
    selector = _key_metric_selector(ctx, [a.hostname for a in agents])
    latest, availability = _latest_or_unavailable(lambda: ctx.metrics.latest(selector, budget))
    views = [pb.AgentView(agent=a, latest=latest.get(a.hostname, []), metrics=availability) for a in agents]
    return views, availability


def list_agents(
    ctx: GatewayContext, token: str, request: agents_pb2.ListAgentsRequest, budget: Budget
) -> tuple[list[pb.AgentView], str, int]:
    """A page of agents with their latest key metrics."""
    authorize_read(ctx, token)
    page = ctx.agents.list(request, budget)
    views, availability = _views(ctx, list(page.agents), budget)
    return views, page.next_page_token, availability


def get_agent(ctx: GatewayContext, token: str, ref: AgentRef, budget: Budget) -> pb.AgentView:
    """One agent with its latest key metrics; by hostname both are fetched at once."""
    authorize_read(ctx, token)
    if ref.hostname and not ref.agent_id:
        latest = ctx.fan_out.submit(ctx.metrics.latest, _key_metric_selector(ctx, [ref.hostname]), budget)
        agent = _resolve(ctx, ref, budget)
        by_host, availability = _latest_or_unavailable(latest.result)
        view = pb.AgentView(agent=agent, latest=by_host.get(agent.hostname, []), metrics=availability)
    else:
        views, _ = _views(ctx, [_resolve(ctx, ref, budget)], budget)
        view = views[0]
    firing, view.alerts = _firing_or_unavailable(ctx, f"{{host={quoted(view.agent.hostname)}}}", budget)
    view.firing_alerts.extend(firing)
    return view


def _firing_or_unavailable(
    ctx: GatewayContext, matchers: str, budget: Budget
) -> tuple[list[alerts_pb2.Alert], pb.Availability.ValueType]:
    """Firing alerts for a partial answer: unavailable alerts never fail the inventory part."""
    if ctx.alerts is None:
        return [], pb.AVAILABILITY_UNSPECIFIED
    request = alerts_pb2.ListAlertsRequest(states=[alerts_pb2.ALERT_STATE_FIRING], matchers=matchers)
    try:
        return list(ctx.alerts.list(request, budget).alerts), pb.AVAILABILITY_AVAILABLE
    except Unavailable as exc:
        event(_log, "alerts unavailable; answering without them", logging.WARNING, error=str(exc))
        return [], pb.AVAILABILITY_UNAVAILABLE


def fleet_overview(
    ctx: GatewayContext, token: str, top_metric: str, top_n: int, recent_limit: int, budget: Budget
) -> pb.GetFleetOverviewResponse:
    """Counts by status, the most recently silent agents, and the top hosts by a metric."""
    authorize_read(ctx, token)
    metric = top_metric or DEFAULT_TOP_METRIC
    if not is_metric_name(metric):
        raise InvalidArgument(f"top_metric {metric[:80]!r} is not a metric name")
    for name, value in (("top_n", top_n), ("recent_limit", recent_limit)):
        if value > 100:
            raise InvalidArgument(f"{name} is {value}; the limit is 100")
    top_n, recent_limit = top_n or 5, recent_limit or 10

    targets = ctx.fan_out.submit(_scrape_targets, ctx, budget)
    firing = ctx.fan_out.submit(_firing_or_unavailable, ctx, "", budget)
    # Counted and listed by the agents service's database, ranked by the metrics service: the
    # overview costs about the same at 10 or 10,000 agents. The silent ones come newest first, in
    # one page (they are few in a healthy fleet), and the ranking asks for as many more values as
    # there are silent hosts to leave out.
    counted = ctx.fan_out.submit(ctx.agents.count, budget)
    silent_agents = list(
        ctx.agents.list(
            agents_pb2.ListAgentsRequest(
                statuses=DOWN, page_size=MAX_SILENT_LISTED, order=agents_pb2.AGENT_ORDER_NEWEST_HEARTBEAT_FIRST
            ),
            budget,
        ).agents
    )
    silent = {a.hostname for a in silent_agents}
    fresh_since = ctx.now_ms() - BUSIEST_FRESH_MS
    ranked = ctx.fan_out.submit(ctx.metrics.latest, metric, budget, top_n + len(silent), fresh_since)
    recently_down, availability = _views(ctx, silent_agents[:recent_limit], budget)
    found = counted.result()
    counts = {status: found.get(status, 0) for status in ALL_STATUSES}
    response = pb.GetFleetOverviewResponse(
        counts=[pb.StatusCount(status=s, count=c) for s, c in counts.items()],
        recently_down=recently_down,
        top_metric=metric,
        metrics=availability,
    )
    alerts, response.alerts = firing.result()
    response.firing_alerts.extend(alerts)
    response.scrape_targets.extend(targets.result())
    try:
        highest = ranked.result()
    except Unavailable as exc:
        event(_log, "metrics unavailable; answering without them", logging.WARNING, error=str(exc))
        response.metrics = pb.AVAILABILITY_UNAVAILABLE
        return response
    top = []
    for sample in highest:  # highest first
        host = next((label.value for label in sample.labels if label.name == "host"), "")
        if host and host not in silent and sample.timestamp_ms >= fresh_since:
            top.append(pb.HostValue(hostname=host, value=sample.value, sampled_at=to_timestamp(sample.timestamp_ms)))
        if len(top) == top_n:
            break
    response.top_hosts.extend(top)
    return response


MAX_SILENT_LISTED = 1000
"""Silent agents the overview learns of (newest first) to keep them out of "busiest now". With more
silent agents than this, an older one that still sends metrics could be ranked."""
BUSIEST_FRESH_MS = 300_000
""""Busiest now" ranks values of the last five minutes only (a silent host's old value is not now)."""
MAX_SCRAPE_TARGETS = 1000


def _scrape_targets(ctx: GatewayContext, budget: Budget) -> list[pb.ScrapeTarget]:
    """Every `up` series with an instance: hosts that report through Prometheus, down ones first.
    Nothing when the metrics service cannot answer (the overview says metrics are unavailable)."""
    try:
        samples = ctx.metrics.latest("up", budget)
    except Unavailable:
        return []
    targets = []
    for sample in samples:
        labels = {label.name: label.value for label in sample.labels}
        if "instance" in labels:
            targets.append(
                pb.ScrapeTarget(
                    instance=labels["instance"],
                    job=labels.get("job", ""),
                    up=sample.value == 1.0,
                    sampled_at=to_timestamp(sample.timestamp_ms),
                )
            )
    targets.sort(key=lambda t: (t.up, t.job, t.instance))
    return targets[:MAX_SCRAPE_TARGETS]


def query_agent_metrics(
    ctx: GatewayContext, token: str, ref: AgentRef, request: pb.QueryAgentMetricsRequest, budget: Budget
) -> tuple[agents_pb2.Agent, list[metrics_pb2.SeriesPoints]]:
    """A range query on one agent's series; by default the hour up to its last heartbeat."""
    authorize_read(ctx, token)
    if not is_metric_name(request.metric):
        raise InvalidArgument(f"metric {request.metric[:80]!r} is not a metric name, e.g. cpu_usage_percent")
    agent = _resolve(ctx, ref, budget)
    matchers = f"host={quoted(agent.hostname)}"
    if request.label_filter.strip():
        matchers += ", " + request.label_filter.strip().strip("{}")
    query = metrics_pb2.QueryRangeRequest(
        selector=metrics_pb2.Selector(selector=f"{request.metric}{{{matchers}}}"),
        aggregation=request.aggregation,
        group_by=list(request.group_by),
    )
    end = request.end if request.HasField("end") else agent.last_heartbeat_at
    query.end.CopyFrom(end)
    if request.HasField("start"):
        query.start.CopyFrom(request.start)
    else:
        query.start.FromMilliseconds(to_epoch_ms(end, "end") - 3_600_000)
    if request.HasField("step"):
        query.step.CopyFrom(request.step)
    return agent, list(ctx.metrics.query(query, budget).series)


def query_metrics(
    ctx: GatewayContext, token: str, request: metrics_pb2.QueryRangeRequest, budget: Budget
) -> metrics_pb2.QueryRangeResponse:
    authorize_read(ctx, token)
    return ctx.metrics.query(request, budget)


def query_promql(
    ctx: GatewayContext, token: str, request: metrics_pb2.RangeQueryRequest, budget: Budget
) -> metrics_pb2.RangeQueryResponse:
    """PromQL over a range, by the metrics service's engine."""
    authorize_read(ctx, token)
    return ctx.metrics.promql(request, budget)


def list_metric_names(ctx: GatewayContext, token: str, budget: Budget) -> metrics_pb2.ListMetricNamesResponse:
    authorize_read(ctx, token)
    return ctx.metrics.metric_names(budget)


def deregister_agent(ctx: GatewayContext, token: str, ref: AgentRef, budget: Budget) -> agents_pb2.Agent:
    """Retire an agent on an operator's behalf."""
    ctx.credentials.require_operator(token)
    agent = _resolve(ctx, ref, budget)
    retired = ctx.agents.deregister(agent.agent_id, token, budget)
    event(_log, "agent deregistered by operator", agent_id=retired.agent_id, hostname=retired.hostname)
    return retired


def approve_agent(ctx: GatewayContext, token: str, ref: AgentRef, budget: Budget) -> agents_pb2.Agent:
    """Let the next registration of a known host in without its token, on an operator's behalf."""
    ctx.credentials.require_operator(token)
    agent = _resolve(ctx, ref, budget)
    approved = ctx.agents.approve(agent.hostname, token, budget)
    event(_log, "agent registration approved by operator", agent_id=approved.agent_id, hostname=approved.hostname)
    return approved


REMOTE_WRITE_CREDENTIAL_METHODS = frozenset(
    {"CreateRemoteWriteCredential", "ListRemoteWriteCredentials", "RevokeRemoteWriteCredential"}
)


def remote_write_credentials(ctx: GatewayContext, token: str, method: str, request: Any, budget: Budget) -> Any:
    """Relay one of the remote-write credential RPCs to the agents service, as the operator."""
    ctx.credentials.require_operator(token)
    if method not in REMOTE_WRITE_CREDENTIAL_METHODS:
        raise ValueError(method)
    reply = ctx.agents.remote_write_credentials(method, request, token, budget)
    if method != "ListRemoteWriteCredentials":
        event(_log, "remote-write credential changed by operator", action=method, name=reply.credential.name)
    return reply


def _status_event(status: int) -> pb.WatchAgentResponse:
    observed = Timestamp()
    observed.GetCurrentTime()
    return pb.WatchAgentResponse(status=pb.StatusChange(status=status, observed_at=observed))


async def watch_agent(
    ctx: GatewayContext,
    token: str,
    ref: AgentRef,
    metric_selector: str,
    budget: Budget,
) -> AsyncIterator[pb.WatchAgentResponse]:
    """The agent's status now and on every change, interleaved with its live samples.

    A coroutine: while nothing happens it holds no thread; the status polls (blocking stub
    calls with deadlines) run on the fan-out pool."""
    authorize_read(ctx, token)
    loop = asyncio.get_running_loop()
    agent = await loop.run_in_executor(ctx.fan_out, _resolve, ctx, ref, budget)

    yield _status_event(agent.status)
    selector = metrics_pb2.Selector(
        selector=metric_selector,
        matchers=[metrics_pb2.LabelMatcher(name="host", value=agent.hostname)],
    )
    events: asyncio.Queue[pb.WatchAgentResponse | Exception] = asyncio.Queue(maxsize=1000)

    def offer(item: pb.WatchAgentResponse | Exception) -> None:
        # Never block the relay on a slow watcher.
        try:
            events.put_nowait(item)
        except asyncio.QueueFull:
            event(_log, "watcher too slow; dropped live samples", logging.WARNING, hostname=agent.hostname)

    async def relay() -> None:
        try:
            async for message in ctx.metrics.watch(selector):
                offer(pb.WatchAgentResponse(samples=message))
        except Unavailable as exc:
            offer(pb.WatchAgentResponse(notice=f"live samples unavailable: {exc}"))
        except Exception as exc:
            offer(exc)

    relaying = asyncio.create_task(relay())
    status, warned = agent.status, False
    next_poll = time.monotonic() + ctx.status_poll_s
    try:
        while not (ctx.stop and ctx.stop.is_set()):
            try:
                item = await asyncio.wait_for(events.get(), timeout=max(0.0, next_poll - time.monotonic()))
                if isinstance(item, Exception):
                    raise item
                yield item
            except TimeoutError:
                pass
            if time.monotonic() < next_poll:
                continue
            next_poll = time.monotonic() + ctx.status_poll_s
            try:
                current = (await loop.run_in_executor(ctx.fan_out, _current_agent, ctx, agent.agent_id)).status
                warned = False
            except Unavailable as exc:
                if not warned:
                    yield pb.WatchAgentResponse(notice=f"agent status unavailable: {exc}")
                    warned = True
                continue
            if current != status:
                status = current
                yield _status_event(status)
    finally:
        relaying.cancel()


def _current_agent(ctx: GatewayContext, agent_id: str) -> agents_pb2.Agent:
    return ctx.agents.get(Budget(), agent_id=agent_id)


def _alerting(ctx: GatewayContext) -> AlertsPort:
    if ctx.alerts is None:
        raise FailedPrecondition("alerting is not configured on this gateway: set INFRAWATCH_ALERTS_ADDRESS")
    return ctx.alerts


def list_alerts(
    ctx: GatewayContext, token: str, request: alerts_pb2.ListAlertsRequest, budget: Budget
) -> alerts_pb2.ListAlertsResponse:
    authorize_read(ctx, token)
    return _alerting(ctx).list(request, budget)


def alert_rules(
    ctx: GatewayContext, token: str, request: alerts_pb2.ListRulesRequest, budget: Budget
) -> alerts_pb2.ListRulesResponse:
    authorize_read(ctx, token)
    return _alerting(ctx).rules(request, budget)


def list_silences(
    ctx: GatewayContext, token: str, request: alerts_pb2.ListSilencesRequest, budget: Budget
) -> alerts_pb2.ListSilencesResponse:
    authorize_read(ctx, token)
    return _alerting(ctx).silences(request, budget)


def reload_alert_rules(ctx: GatewayContext, token: str, budget: Budget) -> alerts_pb2.ReloadRulesResponse:
    ctx.credentials.require_operator(token)
    return _alerting(ctx).reload(token, budget)


def create_silence(
    ctx: GatewayContext, token: str, request: alerts_pb2.CreateSilenceRequest, budget: Budget
) -> alerts_pb2.CreateSilenceResponse:
    ctx.credentials.require_operator(token)
    return _alerting(ctx).create_silence(request, token, budget)


def expire_silence(
    ctx: GatewayContext, token: str, request: alerts_pb2.ExpireSilenceRequest, budget: Budget
) -> alerts_pb2.ExpireSilenceResponse:
    ctx.credentials.require_operator(token)
    return _alerting(ctx).expire_silence(request, token, budget)


async def watch_alerts(
    ctx: GatewayContext, token: str, request: alerts_pb2.WatchAlertsRequest
) -> AsyncIterator[alerts_pb2.WatchAlertsResponse]:
    authorize_read(ctx, token)
    async for message in _alerting(ctx).watch(request):
        yield message
