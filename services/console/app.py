"""The web console: pages rendered with autoescaping templates, JSON and server-sent-event endpoints
the pages' script reads, all answered from the gateway (the console's only backend).

Security: with INFRAWATCH_PROTECT_READS every page and endpoint needs a login (the operator token,
checked by the gateway, kept server-side behind an HttpOnly SameSite=Strict session cookie).
Anything that changes state (login, logout, silences) needs the session and a same-origin request
that carries the `X-InfraWatch-Console` header, which a cross-site form cannot send.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from agent.values import duration_seconds
from infrawatch.alerts.v1 import alerts_pb2
from infrawatch.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2
from services.common.aggregations import BY_NAME as AGGREGATIONS
from services.common.errors import InvalidArgument
from services.common.selectors import MatchType, parse_selector
from services.common.timestamps import to_timestamp
from services.console.sessions import COOKIE, Sessions

HERE = Path(__file__).parent
RANGES_S = {"15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800}
MAX_POINTS = 2000
FLEET_PAGE = 100  # hosts on the fleet page before "show all"
CSRF_HEADER = "x-infrawatch-console"
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 400,
}


@dataclass(frozen=True)
class HostChart:
    """One chart of the host page: a metric, how it is aggregated per step, split by which label."""

    key: str
    title: str
    metric: str
    unit: str
    aggregation: int = metrics_pb2.AGGREGATION_AVG
    group_by: tuple[str, ...] = ()


# InfraWatch's key figures, which also grow live on the page (the PromQL charts below hold the rest).
HOST_CHARTS = (
    HostChart("cpu", "CPU busy", "cpu_usage_percent", "percent"),
    HostChart("memory", "Memory used", "memory_used_percent", "percent"),
    HostChart("load", "Load (1 m)", "load1", ""),
)


@dataclass(frozen=True)
class PromChart:
    """A host-page chart drawn from PromQL: each (legend, query) adds its series, labelled
    `series=legend` when the chart has several. `{host}` is the host's matcher, `{window}` a rate
    window that always spans several of the agent's rounds."""

    key: str
    title: str
    unit: str
    queries: tuple[tuple[str, str], ...]

    def expressions(self, hostname: str, step_s: int) -> list[tuple[str, str]]:
        matcher = 'host="' + hostname.replace("\\", "\\\\").replace('"', '\\"') + '"'
        window = f"{max(60, 2 * step_s)}s"
        return [(legend, query.format(host=matcher, window=window)) for legend, query in self.queries]


# What an SRE reads first during an incident, from the agent's node_exporter-compatible metrics.
PROM_CHARTS = (
    PromChart("cpu-modes", "CPU by mode", "percent", (
        ("", 'sum by (mode) (rate(node_cpu_seconds_total{{{host},mode!="idle"}}[{window}])) * 100'
             ' / scalar(count(node_cpu_seconds_total{{{host},mode="idle"}}))'),
    )),
    PromChart("memory-bytes", "Memory and swap used", "bytes", (
        ("memory", "node_memory_MemTotal_bytes{{{host}}} - node_memory_MemAvailable_bytes{{{host}}}"),
        ("cache", "node_memory_Cached_bytes{{{host}}} + node_memory_Buffers_bytes{{{host}}}"),
        ("swap", "node_memory_SwapTotal_bytes{{{host}}} - node_memory_SwapFree_bytes{{{host}}}"),
    )),
    PromChart("disk-io", "Disk throughput", "bytes/s", (
        ("read", "rate(node_disk_read_bytes_total{{{host}}}[{window}])"),
        ("written", "rate(node_disk_written_bytes_total{{{host}}}[{window}])"),
    )),
    PromChart("disk-util", "Disk utilisation (time busy)", "percent", (
        ("", "rate(node_disk_io_time_seconds_total{{{host}}}[{window}]) * 100"),
    )),
    PromChart("network", "Network in and out", "bytes/s", (
        ("in", 'rate(node_network_receive_bytes_total{{{host},device!="lo"}}[{window}])'),
        ("out", 'rate(node_network_transmit_bytes_total{{{host},device!="lo"}}[{window}])'),
    )),
    PromChart("filesystems", "Filesystems: space and inodes used", "percent", (
        ("space", "100 * (1 - node_filesystem_avail_bytes{{{host}}} / node_filesystem_size_bytes{{{host}}})"),
        ("inodes", "100 * (1 - node_filesystem_files_free{{{host}}} / node_filesystem_files{{{host}}})"),
    )),
    PromChart("pressure", "Pressure: share of time stalled", "percent", (
        ("cpu some", "rate(node_pressure_cpu_waiting_seconds_total{{{host}}}[{window}]) * 100"),
        ("memory some", "rate(node_pressure_memory_waiting_seconds_total{{{host}}}[{window}]) * 100"),
        ("memory full", "rate(node_pressure_memory_stalled_seconds_total{{{host}}}[{window}]) * 100"),
        ("io some", "rate(node_pressure_io_waiting_seconds_total{{{host}}}[{window}]) * 100"),
        ("io full", "rate(node_pressure_io_stalled_seconds_total{{{host}}}[{window}]) * 100"),
    )),
    PromChart("process-cpu", "Top processes by CPU", "cores", (
        ("", "topk(5, sum by (groupname) (rate(namedprocess_namegroup_cpu_seconds_total{{{host}}}[{window}])))"),
    )),
    PromChart("process-memory", "Top processes by resident memory", "bytes", (
        ("", 'topk(5, sum by (groupname) (namedprocess_namegroup_memory_bytes{{{host},memtype="resident"}}))'),
    )),
)  # fmt: skip

# "Top processes now": one column per query, joined by process group.
PROCESS_COLUMNS = (
    ("cpu", "sum by (groupname) (rate(namedprocess_namegroup_cpu_seconds_total{{{host}}}[1m]))"),
    ("resident", 'sum by (groupname) (namedprocess_namegroup_memory_bytes{{{host},memtype="resident"}})'),
    ("procs", "sum by (groupname) (namedprocess_namegroup_num_procs{{{host}}})"),
    ("threads", "sum by (groupname) (namedprocess_namegroup_num_threads{{{host}}})"),
    ("fds", "sum by (groupname) (namedprocess_namegroup_open_filedesc{{{host}}})"),
    ("read", "sum by (groupname) (rate(namedprocess_namegroup_read_bytes_total{{{host}}}[1m]))"),
    ("written", "sum by (groupname) (rate(namedprocess_namegroup_write_bytes_total{{{host}}}[1m]))"),
    ("started", "min by (groupname) (namedprocess_namegroup_oldest_start_time_seconds{{{host}}})"),
)


class GatewayError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def step_for(range_s: int) -> int:
    """The step (seconds) that keeps a chart at or below MAX_POINTS points per series, at least 10 s."""
    return max(10, -(-range_s // MAX_POINTS))


class Console:
    def __init__(
        self,
        channel: Callable[[], grpc.aio.Channel],
        sessions: Sessions,
        protect_reads: bool,
        timeout_s: float,
    ) -> None:
        self._channel_factory = channel
        self._stub: gateway_pb2_grpc.OperatorServiceStub | None = None
        self.sessions = sessions
        self.protect_reads = protect_reads
        self.timeout_s = timeout_s
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))

    @property
    def stub(self) -> gateway_pb2_grpc.OperatorServiceStub:
        if self._stub is None:  # made on first use, inside the server's event loop
            self._stub = gateway_pb2_grpc.OperatorServiceStub(self._channel_factory())
        return self._stub

    def token(self, request: Request) -> str:
        return self.sessions.token(request.cookies.get(COOKIE))

    async def call(self, request: Request, method: str, message: Message) -> Any:
        token = self.token(request)
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            return await getattr(self.stub, method)(message, timeout=self.timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            status = _HTTP_STATUS.get(exc.code(), 503)
            message_text = exc.details() if status != 503 else f"the gateway did not answer ({exc.code().name})"
            raise GatewayError(status, message_text or exc.code().name) from None


def _json_errors(
    handler: Callable[[Console, Request], Awaitable[Any]],
) -> Callable[[Console, Request], Awaitable[Response]]:
    async def wrapped(console: Console, request: Request) -> Response:
        try:
            return JSONResponse(await handler(console, request))
        except GatewayError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    return wrapped


def _same_origin(request: Request) -> bool:
    """A state change must come from this console's own script: the custom header (a cross-site
    form cannot set it) and, when the browser says, a same-origin fetch."""
    site = request.headers.get("sec-fetch-site", "same-origin")
    return request.headers.get(CSRF_HEADER) == "1" and site in ("same-origin", "none")


async def fleet(console: Console, request: Request) -> Any:
    """The overview and the first page of hosts, asked at once: a page is what a person reads
    first, and it comes in the same time at 10 or 10,000 hosts. `all=1` pages through every host
    (for the filter, or "show all")."""
    every = request.query_params.get("all") == "1"
    overview, page = await asyncio.gather(
        console.call(request, "GetFleetOverview", gateway_pb2.GetFleetOverviewRequest(top_n=10)),
        console.call(request, "ListAgents", gateway_pb2.ListAgentsRequest(page_size=1000 if every else FLEET_PAGE)),
    )
    agents: list[dict[str, Any]] = [as_dict(view) for view in page.agents]
    while every and page.next_page_token and len(agents) < 20_000:
        page = await console.call(
            request, "ListAgents", gateway_pb2.ListAgentsRequest(page_size=1000, page_token=page.next_page_token)
        )
        agents.extend(as_dict(view) for view in page.agents)
    return {
        "overview": as_dict(overview),
        "agents": agents,
        "complete": not page.next_page_token,
        "now_ms": int(time.time() * 1000),
    }


async def host(console: Console, request: Request) -> Any:
    hostname = request.path_params["hostname"]
    view = await console.call(
        request, "GetAgent", gateway_pb2.GetAgentRequest(agent=gateway_pb2.AgentRef(hostname=hostname))
    )
    return {"agent": as_dict(view.agent), "now_ms": int(time.time() * 1000)}


async def host_series(console: Console, request: Request) -> Any:
    hostname = request.path_params["hostname"]
    range_name = request.query_params.get("range", "1h")
    if range_name not in RANGES_S:
        raise GatewayError(400, f"range must be one of {', '.join(RANGES_S)}")
    range_s = RANGES_S[range_name]
    step_s = step_for(range_s)
    end_ms = int(time.time() * 1000)
    start_ms = end_ms - range_s * 1000
    step = Duration(seconds=step_s)

    async def one(chart: HostChart) -> dict[str, Any]:
        reply = await console.call(
            request,
            "QueryAgentMetrics",
            gateway_pb2.QueryAgentMetricsRequest(
                agent=gateway_pb2.AgentRef(hostname=hostname),
                metric=chart.metric,
                start=to_timestamp(start_ms),
                end=to_timestamp(end_ms),
                step=step,
                aggregation=chart.aggregation,
                group_by=list(chart.group_by),
            ),
        )
        series = [_chart_series(points) for points in reply.series]
        return {
            "key": chart.key,
            "title": chart.title,
            "unit": chart.unit,
            "metric": chart.metric,
            "group_by": list(chart.group_by),
            "series": series,
        }

    async def prom(chart: PromChart) -> dict[str, Any]:
        expressions = chart.expressions(hostname, step_s)
        replies = await _range_queries(console, request, [q for _, q in expressions], start_ms, end_ms, step_s)
        series = []
        for (legend, _), reply in zip(expressions, replies, strict=True):
            for points in reply.series:
                one_series = _chart_series(points)
                if legend:
                    one_series["labels"] = {"series": legend, **one_series["labels"]}
                series.append(one_series)
        return {"key": chart.key, "title": chart.title, "unit": chart.unit, "metric": "", "group_by": [],
                "series": series}  # fmt: skip

    charts = await asyncio.gather(*(one(chart) for chart in HOST_CHARTS), *(prom(chart) for chart in PROM_CHARTS))
    return {"range": range_name, "step_s": step_s, "start": start_ms // 1000, "end": end_ms // 1000, "charts": charts}


async def _range_queries(
    console: Console, request: Request, queries: list[str], start_ms: int, end_ms: int, step_s: int
) -> list[metrics_pb2.RangeQueryResponse]:
    """PromQL range queries through the gateway, all at once, answers in the order asked."""
    window = {"start": to_timestamp(start_ms), "end": to_timestamp(end_ms), "step": Duration(seconds=step_s)}
    return list(
        await asyncio.gather(
            *(console.call(request, "QueryPromQL", metrics_pb2.RangeQueryRequest(query=q, **window)) for q in queries)
        )
    )


async def host_processes(console: Console, request: Request) -> Any:
    """The host's process groups now (their last minute), busiest first."""
    hostname = request.path_params["hostname"]
    end_ms = int(time.time() * 1000)
    expressions = PromChart("", "", "", PROCESS_COLUMNS).expressions(hostname, 60)
    replies = await _range_queries(console, request, [q for _, q in expressions], end_ms - 60_000, end_ms, 60)
    groups: dict[str, dict[str, Any]] = {}
    for (column, _), reply in zip(expressions, replies, strict=True):
        for points in reply.series:
            name = next((label.value for label in points.labels if label.name == "groupname"), "")
            if name and points.values:
                groups.setdefault(name, {"group": name})[column] = points.values[-1]
    busiest = sorted(groups.values(), key=lambda g: (-g.get("cpu", 0.0), -g.get("resident", 0.0), g["group"]))
    return {"processes": busiest[:15], "at": end_ms // 1000}


async def explore(console: Console, request: Request) -> Any:
    """PromQL over a range (`query`), by the metrics service's engine through the gateway; the
    earlier selector-and-aggregation form (`selector`) still answers links made with it."""
    params = request.query_params
    if params.get("query") is not None or params.get("selector") is None:
        return await _explore_promql(console, request)
    aggregation = params.get("aggregation", "avg")
    if aggregation not in AGGREGATIONS:
        raise GatewayError(400, f"aggregation must be one of {', '.join(AGGREGATIONS)}")
    start, end, step = _explore_window(params)
    group_by = [name.strip() for name in params.get("group_by", "").split(",") if name.strip()]
    reply = await console.call(
        request,
        "QueryMetrics",
        gateway_pb2.QueryMetricsRequest(
            query=metrics_pb2.QueryRangeRequest(
                selector=metrics_pb2.Selector(selector=params.get("selector", "")),
                start=start,
                end=end,
                step=step,
                aggregation=AGGREGATIONS[aggregation],
                group_by=group_by,
            )
        ),
    )
    return {
        "series": [_chart_series(points) for points in reply.result.series],
        "matched_series": reply.result.matched_series,
    }


def _explore_window(params: Any) -> tuple[Timestamp, Timestamp, Duration]:
    """Explore's `range` (up to now) and `step` (seconds; by default what keeps a chart readable)."""
    range_name = params.get("range", "1h")
    if range_name not in RANGES_S:
        raise GatewayError(400, f"range must be one of {', '.join(RANGES_S)}")
    try:
        step_s = int(params.get("step") or step_for(RANGES_S[range_name]))
    except ValueError:
        raise GatewayError(400, "step must be a whole number of seconds") from None
    end_ms = int(time.time() * 1000)
    return to_timestamp(end_ms - RANGES_S[range_name] * 1000), to_timestamp(end_ms), Duration(seconds=max(1, step_s))


def _chart_series(points: metrics_pb2.SeriesPoints) -> dict[str, Any]:
    """One series as the console's charts take it: labels, times in seconds, values."""
    return {
        "labels": {label.name: label.value for label in points.labels},
        "t": [t // 1000 for t in points.timestamps_ms],
        "v": list(points.values),
    }


async def _explore_promql(console: Console, request: Request) -> Any:
    params = request.query_params
    query = params.get("query", "").strip()
    if not query:
        raise GatewayError(400, "query is required: a PromQL expression such as rate(cpu_seconds_total[5m])")
    start, end, step = _explore_window(params)
    reply = await console.call(
        request,
        "QueryPromQL",
        metrics_pb2.RangeQueryRequest(
            query=query,
            start=start,
            end=end,
            step=step,
        ),
    )
    return {
        "series": [_chart_series(points) for points in reply.series],
        "result_type": reply.result_type,
    }


async def metric_names(console: Console, request: Request) -> Any:
    """Every metric name with its help, and every label name, for Explore's autocomplete."""
    reply = await console.call(request, "ListMetricNames", metrics_pb2.ListMetricNamesRequest())
    return {"metrics": [{"name": m.name, "help": m.help} for m in reply.metrics], "labels": list(reply.label_names)}


async def alerts(console: Console, request: Request) -> Any:
    reply = await console.call(request, "ListAlerts", alerts_pb2.ListAlertsRequest())
    return {"alerts": [as_dict(alert) for alert in reply.alerts], "now_ms": int(time.time() * 1000)}


_MATCH_TYPES = {
    MatchType.EQUAL: alerts_pb2.MATCH_TYPE_EQUAL,
    MatchType.NOT_EQUAL: alerts_pb2.MATCH_TYPE_NOT_EQUAL,
    MatchType.REGEX: alerts_pb2.MATCH_TYPE_REGEX,
    MatchType.NOT_REGEX: alerts_pb2.MATCH_TYPE_NOT_REGEX,
}


def _silence_matchers(body: dict[str, Any]) -> list[alerts_pb2.Matcher]:
    """The matchers of a silence: `matchers` in selector syntax (`host="db-1", alertname=~"Disk.*"`),
    or an alert's `labels` (every label matched exactly)."""
    if "matchers" in body:
        text = str(body["matchers"]).strip()
        try:
            parsed = parse_selector(text if text.startswith("{") else "{" + text + "}")
        except InvalidArgument as exc:
            raise GatewayError(400, f"matchers: {exc}") from None
        return [alerts_pb2.Matcher(name=m.name, type=_MATCH_TYPES[m.type], value=m.value) for m in parsed]
    labels = {str(k): str(v) for k, v in dict(body["labels"]).items()}
    return [alerts_pb2.Matcher(name=k, value=v) for k, v in sorted(labels.items())]


async def create_silence(console: Console, request: Request) -> Any:
    """A silence from the console: matchers, a duration (`duration` such as "2h", or `hours`),
    who and why."""
    if not _same_origin(request):
        raise GatewayError(403, "refused: not a request from this console")
    if not console.token(request):
        raise GatewayError(401, "log in with the operator token to silence alerts")
    try:
        body = json.loads(await request.body())
        matchers = _silence_matchers(body)
        seconds = duration_seconds(str(body["duration"])) if "duration" in body else float(body.get("hours", 2)) * 3600
        comment = str(body.get("comment", ""))
        author = str(body.get("author", "") or "console")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise GatewayError(
            400, "expected JSON with matchers (or labels), a duration such as 2h, an author and a comment"
        ) from None
    reply = await console.call(
        request,
        "CreateSilence",
        alerts_pb2.CreateSilenceRequest(
            matchers=matchers,
            ends_at=to_timestamp(int((time.time() + seconds) * 1000)),
            author=author,
            comment=comment,
        ),
    )
    return as_dict(reply.silence)


async def silences(console: Console, request: Request) -> Any:
    expired = request.query_params.get("expired", "") in ("1", "true")
    reply = await console.call(request, "ListSilences", alerts_pb2.ListSilencesRequest(include_expired=expired))
    return {"silences": [as_dict(silence) for silence in reply.silences], "now_ms": int(time.time() * 1000)}


async def expire_silence(console: Console, request: Request) -> Any:
    if not _same_origin(request):
        raise GatewayError(403, "refused: not a request from this console")
    if not console.token(request):
        raise GatewayError(401, "log in with the operator token to expire silences")
    reply = await console.call(
        request, "ExpireSilence", alerts_pb2.ExpireSilenceRequest(id=request.path_params["silence_id"])
    )
    return as_dict(reply.silence)


async def _events(source: AsyncIterator[Message], console: Console) -> AsyncIterator[str]:
    """Server-sent events: one `data:` line of JSON per message, and a comment every 15 s so that
    proxies keep the connection open."""
    iterator = source.__aiter__()
    pending: asyncio.Task[Message] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=15)
            if not done:
                yield ": keep-alive\n\n"
                continue
            message = pending.result()
            pending = None
            yield f"data: {json.dumps(as_dict(message))}\n\n"
    except (StopAsyncIteration, grpc.aio.AioRpcError) as exc:
        if isinstance(exc, grpc.aio.AioRpcError):
            yield f"event: failure\ndata: {json.dumps({'error': exc.details() or exc.code().name})}\n\n"
    finally:
        if pending is not None:
            pending.cancel()


def _metadata(console: Console, request: Request) -> tuple[tuple[str, str], ...]:
    token = console.token(request)
    return (("authorization", f"Bearer {token}"),) if token else ()


async def host_live(console: Console, request: Request) -> Response:
    call = console.stub.WatchAgent(
        gateway_pb2.WatchAgentRequest(
            agent=gateway_pb2.AgentRef(hostname=request.path_params["hostname"]),
            metric_selector='{__name__=~"' + "|".join(chart.metric for chart in HOST_CHARTS) + '"}',
        ),
        metadata=_metadata(console, request),
    )
    return StreamingResponse(
        _events(call, console), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def alerts_live(console: Console, request: Request) -> Response:
    call = console.stub.WatchAlerts(alerts_pb2.WatchAlertsRequest(), metadata=_metadata(console, request))
    return StreamingResponse(
        _events(call, console), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def login(console: Console, request: Request) -> Response:
    if not _same_origin(request):
        return JSONResponse({"error": "refused: not a request from this console"}, status_code=403)
    try:
        token = str(json.loads(await request.body())["token"]).strip()
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "expected JSON with the operator token"}, status_code=400)
    metadata = (("authorization", f"Bearer {token}"),)
    try:  # the gateway is the judge: an operator-only read with this token
        await console.stub.ListSilences(alerts_pb2.ListSilencesRequest(), timeout=console.timeout_s, metadata=metadata)
        await console.stub.GetFleetOverview(
            gateway_pb2.GetFleetOverviewRequest(), timeout=console.timeout_s, metadata=metadata
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return JSONResponse({"error": "the gateway refused this token"}, status_code=401)
        if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:  # alerting not configured is fine
            return JSONResponse({"error": f"the gateway did not answer ({exc.code().name})"}, status_code=503)
    response = JSONResponse({"ok": True})
    response.set_cookie(
        COOKIE,
        console.sessions.open(token),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def logout(console: Console, request: Request) -> Response:
    # Like every state change, only from this console's own script: a cross-site logout used to
    # clear the cookie and leave the session (and its token) alive on the server.
    if not _same_origin(request):
        return JSONResponse({"error": "refused: not a request from this console"}, status_code=403)
    console.sessions.close(request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def build_app(console: Console) -> Starlette:
    def page(template: str) -> Callable[[Request], Awaitable[Response]]:
        async def render(request: Request) -> Response:
            if console.protect_reads and not console.token(request):
                return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
            context = {
                "request": request,
                "params": dict(request.path_params),
                "logged_in": bool(console.token(request)),
            }
            return console.templates.TemplateResponse(request, template, context)

        return render

    def api(handler: Callable[[Console, Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
        wrapped = _json_errors(handler)

        async def endpoint(request: Request) -> Response:
            if console.protect_reads and not console.token(request) and handler not in (create_silence, expire_silence):
                return JSONResponse({"error": "log in with the operator token"}, status_code=401)
            return await wrapped(console, request)

        return endpoint

    def stream(handler: Callable[[Console, Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if console.protect_reads and not console.token(request):
                return JSONResponse({"error": "log in with the operator token"}, status_code=401)
            return await handler(console, request)

        return endpoint

    def bound(handler: Callable[[Console, Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await handler(console, request)

        return endpoint

    async def login_page(request: Request) -> Response:
        return console.templates.TemplateResponse(request, "login.html", {"request": request, "params": {}})

    async def no_content(request: Request) -> Response:
        return Response(status_code=204)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "SERVING"})

    return Starlette(
        routes=[
            Route("/", page("fleet.html")),
            Route("/hosts/{hostname}", page("host.html")),
            Route("/alerts", page("alerts.html")),
            Route("/explore", page("explore.html")),
            Route("/login", login_page),
            Route("/healthz", health),
            Route("/favicon.ico", no_content),
            Route("/api/fleet", api(fleet)),
            Route("/api/hosts/{hostname}", api(host)),
            Route("/api/hosts/{hostname}/series", api(host_series)),
            Route("/api/hosts/{hostname}/processes", api(host_processes)),
            Route("/api/hosts/{hostname}/live", stream(host_live)),
            Route("/api/explore", api(explore)),
            Route("/api/metric-names", api(metric_names)),
            Route("/api/alerts", api(alerts)),
            Route("/api/alerts/live", stream(alerts_live)),
            Route("/silences", page("silences.html")),
            Route("/api/silences", api(create_silence), methods=["POST"]),
            Route("/api/silences", api(silences), methods=["GET"]),
            Route("/api/silences/{silence_id}/expire", api(expire_silence), methods=["POST"]),
            Route("/api/login", bound(login), methods=["POST"]),
            Route("/api/logout", bound(logout), methods=["POST"]),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
    )
