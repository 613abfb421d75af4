"""The Prometheus query edge (prom/http.py) in process, on fakes: the app is driven as an ASGI
server drives it, so parameters, envelopes, status codes and error types are checked in the
fast tier (the e2e tests hold the same edge against real clients)."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.common.credentials import Credentials
from services.metrics.auth import CachedAuthenticator
from services.metrics.ingest.commit import GroupCommitter
from services.metrics.prom.http import PromSide, build_prom_app
from services.metrics.prom.remote_write import RemoteWriteReceiver
from services.metrics.query.promql.evaluator import QueryLimits
from services.metrics.query.use_cases import QueryContext
from services.metrics.telemetry import MetricsTelemetry
from tests.unit.promql_fixture import LoadedStore

T0 = 1_699_000_000 // 3600 * 3600


@pytest.fixture(scope="module")
def loaded() -> LoadedStore:
    return LoadedStore(
        {(("__name__", "up"), ("job", f"j{n}")): [(T0 + 15 * k, float(k % 2)) for k in range(240)] for n in range(3)}
    )


@pytest.fixture
def side(loaded: LoadedStore) -> Iterator[PromSide]:
    pool = ThreadPoolExecutor(2)

    def refuse(token: str) -> Any:
        raise AssertionError("no writes in these tests")

    yield PromSide(
        receiver=RemoteWriteReceiver(None),  # type: ignore[arg-type]
        authenticator=CachedAuthenticator(refuse, 1.0),
        committer=GroupCommitter(loaded.store),
        ingest_pool=pool,
        query_pool=pool,
        queries=QueryContext(loaded.catalog, loaded.store, loaded.clock),
        credentials=Credentials(),
        telemetry=MetricsTelemetry(CollectorRegistry()),
        max_request_bytes=1 << 20,
        lookback_ms=300_000,
        promql_pool=pool,
    )
    pool.shutdown()


_APPS: dict[int, tuple[PromSide, Any]] = {}


def app_of(side: PromSide) -> Any:
    """One app per side, as the service builds one (an app registers its metrics once)."""
    if id(side) not in _APPS:
        _APPS[id(side)] = (side, build_prom_app(side))
    return _APPS[id(side)][1]


def call(side: PromSide, method: str, path: str, params: dict[str, Any] | None = None, **options: Any):
    """(status, decoded JSON body) of one request; `body` and `content_type` for a POST."""
    query = urllib.parse.urlencode(params or {}) if method == "GET" else ""
    body: bytes = options.get("body", b"")
    headers = [(b"content-type", options["content_type"].encode())] if "content_type" in options else []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"test"), *headers], "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 9201),
    }  # fmt: skip
    sent: list[dict] = []

    async def run() -> None:
        incoming = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if incoming:
                return incoming.pop()
            await asyncio.sleep(3600)  # the client stays connected
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await app_of(side)(scope, receive, send)

    asyncio.run(run())
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(content)


def variant(side: PromSide, **changes: Any) -> PromSide:
    """The side with `changes`, and telemetry of its own for its own app."""
    return replace(side, telemetry=MetricsTelemetry(CollectorRegistry()), **changes)


def range_params(**overrides: Any) -> dict[str, Any]:
    return {"query": "up", "start": T0 + 600, "end": T0 + 1800, "step": "60s", **overrides}


def test_a_range_query_answers_a_matrix_in_prometheus_envelope(side):
    status, body = call(side, "GET", "/api/v1/query_range", range_params(query="sum by (job) (up)"))
    assert status == 200 and body["status"] == "success"
    result = body["data"]["result"]
    assert body["data"]["resultType"] == "matrix" and [s["metric"] for s in result] == [
        {"job": "j0"}, {"job": "j1"}, {"job": "j2"}
    ]  # fmt: skip
    assert result[0]["values"][0] == [T0 + 600.0, "0"] and len(result[0]["values"]) == 21


def test_an_instant_query_and_a_scalar_answer(side):
    status, body = call(side, "GET", "/api/v1/query", {"query": "count(up)", "time": T0 + 900})
    assert status == 200 and body["data"] == {
        "resultType": "vector", "result": [{"metric": {}, "value": [T0 + 900.0, "3"]}]
    }  # fmt: skip
    status, body = call(side, "GET", "/api/v1/query", {"query": "1 + 1", "time": T0})
    assert body["data"] == {"resultType": "scalar", "result": [float(T0), "2"]}


def test_a_post_form_is_read_like_a_query_string_and_other_bodies_are_refused(side):
    form = urllib.parse.urlencode(range_params()).encode()
    status, body = call(
        side, "POST", "/api/v1/query_range", body=form, content_type="application/x-www-form-urlencoded"
    )
    assert status == 200 and len(body["data"]["result"]) == 3
    status, body = call(side, "POST", "/api/v1/query_range", body=b"{}", content_type="application/json")
    assert status == 400 and body["errorType"] == "bad_data" and "form-encoded" in body["error"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"query": None}, "query"),
        ({"end": T0}, "end timestamp must not be before start time"),
        ({"step": "-60"}, "zero or negative query resolution step"),
        ({"start": T0, "end": T0 + 20_000, "step": "1s"}, "exceeded maximum resolution of 11,000 points"),
        ({"query": "sum("}, "invalid parameter 'query'"),
        ({"query": "up[5m]"}, 'invalid expression type "range vector" for range query'),
        ({"query": "rate(up)"}, "invalid parameter 'query'"),
    ],
)
def test_bad_parameters_are_bad_data_naming_the_problem(side, params, message):
    given = {k: v for k, v in range_params(**params).items() if v is not None}
    status, body = call(side, "GET", "/api/v1/query_range", given)
    assert status == 400 and body["status"] == "error" and body["errorType"] == "bad_data", body
    assert message in body["error"], body["error"]


def test_past_the_budget_is_an_execution_error(side):
    tight = variant(side, promql_limits=QueryLimits(max_points=10))
    status, body = call(tight, "GET", "/api/v1/query_range", range_params())
    assert status == 422 and body["errorType"] == "execution" and "INFRAWATCH_PROMQL_MAX_POINTS" in body["error"]
    tight = variant(side, promql_limits=QueryLimits(max_samples=5))
    status, body = call(tight, "GET", "/api/v1/query_range", range_params())
    assert status == 422 and body["errorType"] == "execution" and "more than 5 samples" in body["error"]


def test_a_timeout_parameter_that_is_not_a_duration_is_bad_data(side):
    status, body = call(side, "GET", "/api/v1/query_range", range_params(timeout="soon"))
    assert status == 400 and body["errorType"] == "bad_data" and "timeout" in body["error"]


def test_reads_can_be_protected(side):
    guarded = variant(side, credentials=Credentials(operator_token="op", protect_reads=True))
    status, body = call(guarded, "GET", "/api/v1/query_range", range_params())
    assert status == 401 and body["status"] == "error", body
