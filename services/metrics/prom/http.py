"""The Prometheus side of the metrics service, over HTTP (INFRAWATCH_PROM_PORT, 9201).

- `POST /api/v1/write`: remote-write 1.0 in, through the same ingest checks and group commit
  as the agents' streams (`remote_write.py`). 204 when everything is stored (duplicates of
  samples already stored count as stored: a re-send is harmless); 400 when some samples could
  not be stored — the rest are — with the reasons (re-sending would not help, so Prometheus must
  not retry); 401 without a valid credential; 413 past the size limit; 503 when the database or
  the agents service cannot be reached (Prometheus retries, and nothing it was not told is
  stored is lost).
- The query API Grafana's Prometheus data source and promtool use: `/api/v1/query`,
  `query_range`, `series`, `labels`, `label/<name>/values` (narrowed by `start`/`end`, cut at
  `limit`), `metadata` (by family), `query_exemplars` (empty), `format_query`, `targets` and
  `status/buildinfo|config|flags|runtimeinfo|tsdb`, with Prometheus' JSON envelope and error types
  (`query/promql/` evaluates, `answers.py` writes the answers, `listings.py` lists).

Runs on the metrics process's event loop (uvicorn), next to the gRPC server: remote-write goes to
the ingest pool the agents' streams use, listings to the query pool, and PromQL to a pool of its
own (INFRAWATCH_PROMQL_WORKERS), so heavy PromQL cannot hold the threads gRPC queries need. A
PromQL query is stopped at its time limit (`timeout`, at most INFRAWATCH_PROMQL_TIMEOUT) or when
its client goes away.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from agent.logs import event
from services.common import errors
from services.common.allocator import MemoryReleaser
from services.common.credentials import Credentials
from services.common.db import database_problem
from services.common.metadata import token_of
from services.common.telemetry import LATENCY_BUCKETS
from services.metrics.auth import AgentIdentity, CachedAuthenticator
from services.metrics.ingest.commit import GroupCommitter
from services.metrics.ingest.stream import PreparedBatch
from services.metrics.prom.answers import instant_answer, range_body, success_body
from services.metrics.prom.listings import ALL_TIME, Listings, Window
from services.metrics.prom.remote_write import (
    DecodeLimits,
    PayloadTooLarge,
    RemoteWriteReceiver,
    decode,
    decompress,
    rejections_summary,
)
from services.metrics.prom.rules_api import AlertsRelay, alerts_data, rules_data
from services.metrics.query.promql.evaluator import Evaluator, QueryLimits
from services.metrics.query.promql.parser import format_query as formatted
from services.metrics.query.promql.parser import parse_duration
from services.metrics.query.promql.values import QueryCancelled, QueryTimeout
from services.metrics.query.use_cases import QueryContext
from services.metrics.telemetry import MetricsTelemetry

_log = logging.getLogger("infrawatch.metrics.prom")
LARGE_REQUEST_BYTES = 8 << 20
"""A remote-write request this large (decompressed) is followed by giving freed memory back."""
T = TypeVar("T")
VERSION = "0.15.0"
MAX_FORM_BYTES = 1 << 20
"""Largest form-encoded query request (a PromQL query of Grafana's is a few kilobytes)."""

_HTTP_STATUS: tuple[tuple[type[errors.DomainError], int, str], ...] = (
    (PayloadTooLarge, 413, "bad_data"),
    (QueryTimeout, 503, "timeout"),
    (QueryCancelled, 499, "canceled"),
    (errors.InvalidArgument, 400, "bad_data"),
    (errors.Unauthenticated, 401, "unauthorized"),
    (errors.PermissionDenied, 403, "forbidden"),
    (errors.NotFound, 404, "not_found"),
    (errors.ResourceExhausted, 422, "execution"),
    (errors.FailedPrecondition, 422, "execution"),
    (errors.Unavailable, 503, "unavailable"),
    (errors.DataLoss, 500, "internal"),
)
"""Domain errors as HTTP: status and Prometheus' errorType. The one table of this edge."""


def http_status(error: errors.DomainError) -> tuple[int, str]:
    for kind, status, error_type in _HTTP_STATUS:
        if isinstance(error, kind):
            return status, error_type
    return 500, "internal"


def bearer(request: Request) -> str:
    return token_of(request.headers.get("authorization", ""))


@dataclass(frozen=True)
class ServerStatus:
    """What the status endpoints say about this server: Prometheus' flag names for the settings
    that mean the same, and when it started."""

    flags: dict[str, str]
    started_at: float = field(default_factory=time.time)

    def config_yaml(self) -> str:
        """There is no prometheus.yml: the equivalent settings, as YAML Grafana can show."""
        return (
            "# InfraWatch metrics service: configured by INFRAWATCH_* environment variables "
            "(python -m services.metrics --help)\n"
            "global:\n"
            f"  query_lookback_delta: {self.flags.get('query.lookback-delta', '5m')}\n"
            "remote_write_receiver: /api/v1/write\n"
            f"storage_retention: {self.flags.get('storage.tsdb.retention.time', '')}\n"
        )

    def runtime_info(self) -> dict[str, Any]:
        started = datetime.fromtimestamp(self.started_at, tz=UTC).isoformat().replace("+00:00", "Z")
        return {
            "startTime": started,
            "CWD": os.getcwd(),
            "reloadConfigSuccess": True,
            "lastConfigTime": started,  # settings are read once, at start
            "corruptionCount": 0,
            "goroutineCount": threading.active_count(),
            "GOMAXPROCS": os.cpu_count() or 1,
            "GOMEMLIMIT": 0,
            "GOGC": "",
            "GODEBUG": "",
            "storageRetention": self.flags.get("storage.tsdb.retention.time", ""),
        }


@dataclass
class PromSide:
    receiver: RemoteWriteReceiver
    authenticator: CachedAuthenticator
    committer: GroupCommitter
    ingest_pool: Executor
    query_pool: Executor
    queries: QueryContext
    credentials: Credentials
    telemetry: MetricsTelemetry
    max_request_bytes: int
    lookback_ms: int
    promql_pool: Executor | None = None
    promql_limits: QueryLimits = field(default_factory=QueryLimits)
    unreachable: tuple[type[BaseException], ...] = ()
    decode_limits: DecodeLimits = field(default_factory=DecodeLimits)
    status: ServerStatus = field(default_factory=lambda: ServerStatus({}))
    alerts: AlertsRelay | None = None
    """Where /api/v1/rules and /api/v1/alerts are read from; None answers no rules."""


class PromTelemetry:
    def __init__(self, telemetry: MetricsTelemetry) -> None:
        registry = telemetry.registry
        self.requests = Counter(
            "infrawatch_prom_http_requests",
            "Requests to the Prometheus side (remote-write and query API), by handler and HTTP status code.",
            ["handler", "code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "infrawatch_prom_http_request_seconds",
            "Time to answer a request on the Prometheus side, by handler.",
            ["handler"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.skipped = Counter(
            "infrawatch_remote_write_skipped",
            "Remote-write parts not stored: exemplars and native histograms (only float samples are kept).",
            ["kind"],
            registry=registry,
        )


def build_prom_app(side: PromSide) -> Starlette:
    telemetry = PromTelemetry(side.telemetry)

    async def on(pool: Executor, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, work, *args)

    def handler(name: str, work: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            began = time.perf_counter()
            try:
                response = await work(request)
            except errors.DomainError as exc:
                status, error_type = http_status(exc)
                response = _error(name, status, error_type, str(exc))
            except side.unreachable as exc:
                reason = database_problem(exc)
                response = _error(
                    name, 503, "unavailable", f"the metrics database is unavailable ({reason}); retry shortly"
                )
            except Exception:
                _log.exception("unexpected error on the Prometheus side")
                response = _error(name, 500, "internal", "internal error (logged by the metrics service)")
            telemetry.requests.labels(name, str(response.status_code)).inc()
            telemetry.seconds.labels(name).observe(time.perf_counter() - began)
            return response

        return endpoint

    releaser = MemoryReleaser()

    def prepare(identity: AgentIdentity, body: bytes) -> PreparedBatch:
        data = decompress(body, side.max_request_bytes)
        large = len(data) > LARGE_REQUEST_BYTES
        refusal: errors.DomainError | None = None
        try:
            columns = decode(data, side.decode_limits)
        except errors.DomainError as exc:
            # Without its traceback, the refusal no longer holds the decoder's frames (and the
            # request's pieces in them), so the memory below is really free.
            refusal = exc.with_traceback(None)
        del data
        if large:
            releaser.note_large_work()
        releaser.release_if_due()
        if refusal is not None:
            raise refusal
        if columns.exemplars:
            telemetry.skipped.labels("exemplar").inc(columns.exemplars)
        if columns.histograms:
            telemetry.skipped.labels("histogram").inc(columns.histograms)
        return side.receiver.prepare(identity.agent_id, identity.hostname, columns)

    async def write(request: Request) -> Response:
        arrived = time.perf_counter()
        token = bearer(request)
        if not token:
            raise errors.Unauthenticated(
                "missing credential: send `Authorization: Bearer <remote-write token>` "
                "(prometheus.yml: remote_write.authorization.credentials)"
            )
        declared = int(request.headers.get("content-length") or 0)
        if declared > 2 * side.max_request_bytes:  # hopeless: not even read (see _bounded_body)
            raise PayloadTooLarge(f"the request is {declared} bytes; the limit is {side.max_request_bytes}")
        identity = side.authenticator.cached(token) or await on(side.ingest_pool, side.authenticator.identify, token)
        body = await _bounded_body(request, side.max_request_bytes)
        prepared = await on(side.ingest_pool, prepare, identity, body)
        await side.committer.future(prepared)
        side.telemetry.acknowledged(prepared.result, time.perf_counter() - arrived)
        if prepared.result.rejected:
            return PlainTextResponse(rejections_summary(prepared) + "\n", status_code=400)
        return Response(status_code=204)

    async def read_data(request: Request, work: Callable[..., T], *args: Any) -> T:
        side.credentials.require_reader(bearer(request))
        return await on(side.query_pool, work, *args)

    async def read(request: Request, work: Callable[..., Any], *args: Any) -> Response:
        return JSONResponse({"status": "success", "data": await read_data(request, work, *args)})

    async def params(request: Request) -> dict[str, list[str]]:
        """GET query parameters and POSTed form fields together (clients use both)."""
        found: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            found.setdefault(key, []).append(value)
        if request.method == "POST":
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind not in ("", "application/x-www-form-urlencoded"):
                raise errors.InvalidArgument(
                    f"POST bodies are form-encoded (application/x-www-form-urlencoded), not {kind}"
                )
            body = (await _bounded_body(request, MAX_FORM_BYTES)).decode("utf-8", "replace")
            for key, field_value in parse_qsl(body, keep_blank_values=True):
                found.setdefault(key, []).append(field_value)
        return found

    def listings() -> Listings:
        return Listings(side.queries, side.lookback_ms)

    async def evaluate(request: Request, given: dict[str, list[str]], work: Callable[[Evaluator], bytes]) -> Response:
        """A PromQL evaluation on its own pool, under the query's limits; stopped when the client
        disconnects (checked while it runs) or past its timeout. The work writes the answer's JSON
        too, so a large answer is not serialised on the event loop."""
        side.credentials.require_reader(bearer(request))
        gone = threading.Event()
        limits = side.promql_limits
        timeout = limits.timeout_s
        if given.get("timeout") and given["timeout"][-1]:
            timeout = min(timeout, _duration(given["timeout"][-1], "timeout"))
        evaluator = Evaluator(
            side.queries,
            side.lookback_ms,
            QueryLimits(limits.max_samples, limits.max_points, timeout, cancelled=gone.is_set),
        )
        pool = side.promql_pool or side.query_pool
        future = asyncio.get_running_loop().run_in_executor(pool, work, evaluator)
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=0.2)
                if done:
                    return Response(future.result(), media_type="application/json")
                if await request.is_disconnected():
                    gone.set()
        finally:
            gone.set()

    async def query(request: Request) -> Response:
        given = await params(request)
        expr = _one(given, "query")
        at = _time(given, "time", default=time.time())
        return await evaluate(
            request,
            given,
            lambda evaluator: success_body(instant_answer(evaluator.instant(expr, at))),
        )

    async def query_range(request: Request) -> Response:
        given = await params(request)
        expr = _one(given, "query")
        start, end = _time(given, "start"), _time(given, "end")
        step = _duration(_one(given, "step"), "step")
        return await evaluate(request, given, lambda evaluator: range_body(evaluator.range(expr, start, end, step)))

    async def series(request: Request) -> Response:
        given = await params(request)
        matches = given.get("match[]") or []
        if not matches:
            raise errors.InvalidArgument("no match[] parameter provided")
        limit = _limit(given)
        found = await read_data(request, listings().series, matches, _window(given))
        return _listing([dict(labels) for labels in found], limit)

    async def labels(request: Request) -> Response:
        given = await params(request)
        limit = _limit(given)
        found = await read_data(request, listings().label_names, given.get("match[]") or [], _window(given))
        return _listing(found, limit)

    async def label_values(request: Request) -> Response:
        given = await params(request)
        name = request.path_params["name"]
        limit = _limit(given)
        found = await read_data(request, listings().label_values, name, given.get("match[]") or [], _window(given))
        return _listing(found, limit)

    async def metadata(request: Request) -> Response:
        given = await params(request)
        metric = (given.get("metric") or [""])[-1]
        per_metric = _limit(given, "limit_per_metric")
        return await read(request, listings().metadata, metric, _limit(given), per_metric)

    async def tsdb(request: Request) -> Response:
        given = await params(request)
        return await read(request, listings().tsdb_status, _limit(given) or 10)

    async def targets(request: Request) -> Response:
        return await read(request, listings().targets)

    def answered(request: Request, data: Any) -> Response:
        """A read answered on the loop (nothing to compute): the reader check and the envelope."""
        side.credentials.require_reader(bearer(request))
        return JSONResponse({"status": "success", "data": data})

    async def exemplars(request: Request) -> Response:
        return answered(request, [])  # exemplars are not stored

    async def format_query(request: Request) -> Response:
        given = await params(request)
        return JSONResponse({"status": "success", "data": formatted(_one(given, "query"))})

    async def config(request: Request) -> Response:
        return answered(request, {"yaml": side.status.config_yaml()})

    async def flags(request: Request) -> Response:
        return answered(request, side.status.flags)

    async def runtimeinfo(request: Request) -> Response:
        return answered(request, side.status.runtime_info())

    async def buildinfo(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "success",
                "data": {
                    "version": VERSION,
                    "revision": "infrawatch",
                    "branch": "main",
                    "buildUser": "infrawatch",
                    "buildDate": "",
                    "goVersion": "none (InfraWatch, Python)",
                },
            }
        )

    async def rules(request: Request) -> Response:
        given = await params(request)
        kind = given.get("type", [""])[-1]
        relay = side.alerts
        if relay is None:
            return answered(request, {"groups": []})
        found, alerts = await read_data(request, relay.rules_and_alerts)
        return answered(request, rules_data(found, alerts, kind))

    async def alerts(request: Request) -> Response:
        relay = side.alerts
        if relay is None:
            return answered(request, {"alerts": []})
        return answered(request, alerts_data(await read_data(request, relay.alerts)))

    async def ready(request: Request) -> Response:
        return PlainTextResponse("InfraWatch metrics (Prometheus side) is ready.\n")

    both = ["GET", "POST"]
    routes = [
        Route("/api/v1/write", handler("write", write), methods=["POST"]),
        Route("/api/v1/query", handler("query", query), methods=both),
        Route("/api/v1/query_range", handler("query_range", query_range), methods=both),
        Route("/api/v1/series", handler("series", series), methods=both),
        Route("/api/v1/labels", handler("labels", labels), methods=both),
        Route("/api/v1/label/{name}/values", handler("label_values", label_values), methods=["GET"]),
        Route("/api/v1/metadata", handler("metadata", metadata), methods=["GET"]),
        Route("/api/v1/query_exemplars", handler("query_exemplars", exemplars), methods=both),
        Route("/api/v1/format_query", handler("format_query", format_query), methods=both),
        Route("/api/v1/targets", handler("targets", targets), methods=["GET"]),
        Route("/api/v1/rules", handler("rules", rules), methods=["GET"]),
        Route("/api/v1/alerts", handler("alerts", alerts), methods=["GET"]),
        Route("/api/v1/status/buildinfo", handler("buildinfo", buildinfo), methods=["GET"]),
        Route("/api/v1/status/config", handler("config", config), methods=["GET"]),
        Route("/api/v1/status/flags", handler("flags", flags), methods=["GET"]),
        Route("/api/v1/status/runtimeinfo", handler("runtimeinfo", runtimeinfo), methods=["GET"]),
        Route("/api/v1/status/tsdb", handler("tsdb", tsdb), methods=["GET"]),
        Route("/-/ready", ready, methods=["GET"]),
        Route("/-/healthy", ready, methods=["GET"]),
    ]
    event(_log, "Prometheus side ready", handlers=len(routes))
    return Starlette(routes=routes)


def _error(handler: str, status: int, error_type: str, message: str) -> Response:
    if handler == "write":
        # Remote-write senders log the body; plain text reads best there.
        return PlainTextResponse(message + "\n", status_code=status)
    return JSONResponse({"status": "error", "errorType": error_type, "error": message}, status_code=status)


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The body, refused past `limit` bytes while it arrives (a chunked upload declares no length).
    Up to twice the limit is read and dropped first, so the sender gets to read the 413 rather
    than a connection reset (which it would retry)."""
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size <= limit:
            parts.append(part)
        elif size > 2 * limit:
            break
    if size > limit:
        raise PayloadTooLarge(f"the request is more than {limit} bytes; the limit is {limit}")
    return b"".join(parts)


def _listing(items: list[Any], limit: int) -> Response:
    """A listing's answer; past `limit` cut short with Prometheus' warning."""
    body: dict[str, Any] = {"status": "success", "data": items[:limit] if limit else items}
    if limit and len(items) > limit:
        body["warnings"] = [f"results truncated due to limit ({limit} of {len(items)})"]
    return JSONResponse(body)


def _limit(given: dict[str, list[str]], name: str = "limit") -> int:
    """A `limit` parameter: 0 (or absent) means no limit, as in Prometheus."""
    values = given.get(name)
    if not values or not values[-1]:
        return 0
    try:
        limit = int(values[-1])
    except ValueError:
        raise errors.InvalidArgument(f"invalid parameter {name!r}: {values[-1][:40]!r} is not a number") from None
    if limit < 0:
        raise errors.InvalidArgument(f"invalid parameter {name!r}: limit must be non-negative")
    return limit


def _window(given: dict[str, list[str]]) -> Window | None:
    """The start/end of a listing, or None when neither is given (the whole index, as before)."""
    if not given.get("start") and not given.get("end"):
        return None
    start = _time(given, "start", default=ALL_TIME.start_ms / 1000)
    end = _time(given, "end", default=ALL_TIME.end_ms / 1000)
    if end < start:
        raise errors.InvalidArgument("invalid parameter 'end': end timestamp must not be before start time")
    return Window(round(start * 1000), round(end * 1000))


def _one(given: dict[str, list[str]], name: str) -> str:
    values = given.get(name)
    if not values or not values[-1]:
        raise errors.InvalidArgument(f"the {name} parameter is required")
    return values[-1]


def _time(given: dict[str, list[str]], name: str, default: float | None = None) -> float:
    """A time parameter as Prometheus takes it: Unix seconds (fractions allowed) or RFC 3339."""
    values = given.get(name)
    if not values or not values[-1]:
        if default is None:
            raise errors.InvalidArgument(f"the {name} parameter is required")
        return default
    raw = values[-1]
    try:
        seconds = float(raw)
    except ValueError:
        try:
            seconds = datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise errors.InvalidArgument(
                f"invalid parameter {name!r}: cannot parse {raw[:80]!r} to a valid timestamp"
            ) from None
    if not math.isfinite(seconds):
        raise errors.InvalidArgument(f"invalid parameter {name!r}: {raw[:80]!r} is not a finite time")
    return seconds


def _duration(raw: str, name: str) -> float:
    """A duration parameter: seconds (fractions allowed) or a Prometheus duration (`15s`, `1m30s`)."""
    try:
        seconds = float(raw)
    except ValueError:
        seconds = parse_duration(raw, name)
    if not math.isfinite(seconds) or seconds <= 0:
        raise errors.InvalidArgument(
            f"invalid parameter {name!r}: zero or negative query resolution step widths are not accepted. "
            "Try a positive integer"
        )
    return seconds
