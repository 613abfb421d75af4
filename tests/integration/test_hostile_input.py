"""Property-based hostile input: every RPC of every service, over real gRPC, with messages that
hypothesis generates from the proto descriptors (random and oversized strings, huge label sets and
maps, extreme numbers, invalid enum values, out-of-range timestamps and durations, hostile
patterns, empty and cut-off streams), under every kind of credential.

For each call: the status is one of the documented codes (never INTERNAL or UNKNOWN), the
services stay healthy, this process's memory stays bounded, and what was accepted before the
barrage (a seed host and its samples) is still there, unchanged.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import psutil
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from infrawatch.alerts.v1 import alerts_pb2
from infrawatch.gateway.v1 import gateway_pb2
from infrawatch.metrics.v1 import metrics_pb2, metrics_pb2_grpc
from services.agents.__main__ import MIGRATIONS as AGENTS_MIGRATIONS
from services.agents.__main__ import VERSION_TABLE as AGENTS_VERSION_TABLE
from services.common.db import create_db_engine, migrate, with_driver
from services.common.timestamps import to_timestamp
from services.metrics.__main__ import MIGRATIONS as METRICS_MIGRATIONS
from services.metrics.__main__ import VERSION_TABLE as METRICS_VERSION_TABLE
from services.metrics.domain import IngestLimits
from tests.integration.conftest import (
    CREDENTIALS,
    ENROLLMENT_TOKEN,
    OPERATOR_TOKEN,
    SERVICE_TOKEN,
    TEST_METRICS_CONFIG,
    agents_context,
    running_agents,
    running_alerts,
    running_gateway,
    running_metrics,
)

# What a client may get back. UNAVAILABLE and INTERNAL are not here: nothing is down, and an
# INTERNAL is a bug. DEADLINE_EXCEEDED only ends the live streams, which wait for samples.
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
LIVE_STREAM_END = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
MEMORY_GROWTH_LIMIT = 600 * 2**20
MESSAGE_LIMIT = 4 * 1024 * 1024
SEED_HOST = "seed-host"  # never named to hypothesis: what it holds must come through intact
SPARRING_HOST = "sparring-host"  # named to hypothesis, so calls reach the code behind 'not found'
SEED_VALUES = [1.5, float("inf"), -0.0, 42.0]
SEED_START_MS = (int(time.time()) // 3600 - 1) * 3_600_000  # an hour ago, within retention

SERVICES: dict[str, ServiceDescriptor] = {
    "agents": agents_pb2.DESCRIPTOR.services_by_name["AgentService"],
    "alerts": alerts_pb2.DESCRIPTOR.services_by_name["AlertService"],
    "metrics": metrics_pb2.DESCRIPTOR.services_by_name["MetricsService"],
    "gateway": gateway_pb2.DESCRIPTOR.services_by_name["OperatorService"],
}
METHODS = [(name, method.name) for name, service in SERVICES.items() for method in service.methods]


# Strategies: any message of any type, built from its descriptor.

_words = st.sampled_from(
    [
        "",
        "host",
        "__name__",
        "cpu_usage_percent",
        SPARRING_HOST,
        "a" * 30,
        '{tag=~"(a+)+b"}',
        '{host=~"' + "(" * 3000 + '"}',
        '{host=~".*"}',
        "x{" * 5000,
        "\x00\x01",
        "\u202e\u0301" * 50,
        "${jndi:ldap://x}",
        "'; DROP TABLE agents; --",
        "00000000-0000-4000-8000-000000000000",
        "AGENT_STATUS_ONLINE",
    ]
)


def _strings(known: list[str]) -> st.SearchStrategy[str]:
    """Random text, hostile words, oversized strings, and the ids and names the platform knows
    (so that calls get past 'not found' into the code behind it)."""
    return st.one_of(
        st.text(max_size=40),
        _words,
        st.sampled_from(known),
        st.integers(min_value=1_000, max_value=300_000).map(lambda n: "a" * n),
    )


_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in (low, high, 0, 1, -1, 99, 1_700_000_000_000, 10**15) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(min_value=low, max_value=high))


def _scalar(field: FieldDescriptor, known: list[str]) -> st.SearchStrategy[Any]:
    if field.type in _INT_RANGES:
        return _integers(*_INT_RANGES[field.type])
    if field.type == FieldDescriptor.TYPE_ENUM:  # valid values and the invalid ones around them
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), _integers(-5, 1000))
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=64 if field.type == 1 else 32)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    return _strings(known)


def _sizes() -> st.SearchStrategy[int]:
    """Mostly small collections, sometimes huge ones."""
    return st.one_of(st.integers(min_value=0, max_value=4), st.sampled_from([50, 500, 3000]))


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, known: list[str], depth: int = 0) -> Message:
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        target = getattr(message, field.name) if field.is_repeated else None
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
            for _ in range(draw(_sizes())):
                k = draw(_scalar(key, known))
                if value.message_type is not None:
                    target[k].CopyFrom(draw(messages(value.message_type, known, depth + 1)))
                else:
                    target[k] = draw(_scalar(value, known))
        elif field.is_repeated:
            count = draw(_sizes())
            if entry is not None:
                if depth < 3:
                    target.extend(draw(messages(entry, known, depth + 1)) for _ in range(min(count, 50)))
            else:
                target.extend(draw(st.lists(_scalar(field, known), min_size=count, max_size=count)))
        elif entry is not None:
            if depth < 3:
                getattr(message, field.name).CopyFrom(draw(messages(entry, known, depth + 1)))
        else:
            setattr(message, field.name, draw(_scalar(field, known)))
    return message


# The platform under attack: one per store, shared by every example, with a seed accepted first.


@dataclass
class Platform:
    addresses: dict[str, str]
    channels: dict[str, grpc.Channel]
    seed_token: str
    seed_agent: agents_pb2.Agent
    seed_series: metrics_pb2.SeriesPoints
    rss_at_start: int
    sparring_id: str


def _seed(agents: agents_pb2_grpc.AgentServiceStub, metrics: metrics_pb2_grpc.MetricsServiceStub) -> tuple:
    enroll = (("authorization", f"Bearer {ENROLLMENT_TOKEN}"),)
    registered = agents.RegisterAgent(
        agents_pb2.RegisterAgentRequest(hostname=SEED_HOST, labels={"env": "seed"}), metadata=enroll, timeout=10
    )
    batch = metrics_pb2.MetricBatch(sequence=1)
    batch.series.add(
        labels=[metrics_pb2.Label(name="__name__", value="seed_metric"), metrics_pb2.Label(name="node", value="s")],
        timestamps_ms=[SEED_START_MS + i for i in range(len(SEED_VALUES))],
        values=SEED_VALUES,
    )
    batch.metadata.add(name="seed_metric", type=metrics_pb2.METRIC_TYPE_GAUGE, unit="seconds")
    token = (("authorization", f"Bearer {registered.agent_token}"),)
    (ack,) = metrics.StreamMetrics(iter([batch]), metadata=token, timeout=10)
    assert ack.samples_accepted == len(SEED_VALUES)
    return registered.agent_token, registered.agent


def _seed_series(platform_channels: dict[str, grpc.Channel]) -> metrics_pb2.SeriesPoints:
    reply = metrics_pb2_grpc.MetricsServiceStub(platform_channels["metrics"]).QueryRange(
        metrics_pb2.QueryRangeRequest(
            selector=metrics_pb2.Selector(selector='seed_metric{host="seed-host"}'),
            start=to_timestamp(SEED_START_MS - 1000),
            end=to_timestamp(SEED_START_MS + 1000),
        ),
        timeout=10,
    )
    (series,) = reply.series
    return series


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'hostile.db'}"
    else:
        base = request.getfixturevalue("postgres_url")
        schema = f"hostile_{uuid.uuid4().hex[:10]}"
        with create_engine(with_driver(base)).begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    engine = create_db_engine(url)
    rules = tmp_path_factory.mktemp("rules") / "rules.yaml"
    rules.write_text(HOSTILE_RULES)
    migrate(engine, AGENTS_MIGRATIONS, AGENTS_VERSION_TABLE)
    migrate(engine, METRICS_MIGRATIONS, METRICS_VERSION_TABLE)
    config = dataclasses.replace(
        TEST_METRICS_CONFIG,
        limits=IngestLimits(max_series_per_batch=200, max_series_per_agent=2000, max_series_total=20_000),
    )
    with (
        running_agents(agents_context(engine, CREDENTIALS)) as agents_address,
        running_metrics(engine, agents_address, config) as metrics,
        running_alerts(engine, agents_address, metrics.address, rules) as alerts_address,
        running_gateway(agents_address, metrics.address, alerts_address=alerts_address) as gateway_address,
    ):
        addresses = {
            "agents": agents_address,
            "metrics": metrics.address,
            "alerts": alerts_address,
            "gateway": gateway_address,
        }
        channels = {name: grpc.insecure_channel(address) for name, address in addresses.items()}
        agents = agents_pb2_grpc.AgentServiceStub(channels["agents"])
        token, agent = _seed(agents, metrics_pb2_grpc.MetricsServiceStub(channels["metrics"]))
        sparring = agents.RegisterAgent(
            agents_pb2.RegisterAgentRequest(hostname=SPARRING_HOST),
            metadata=(("authorization", f"Bearer {ENROLLMENT_TOKEN}"),),
            timeout=10,
        )
        yield Platform(
            addresses,
            channels,
            token,
            agent,
            _seed_series(channels),
            psutil.Process().memory_info().rss,
            sparring.agent_id,
        )
        for channel in channels.values():
            channel.close()
    engine.dispose()
    if schema is not None:
        with create_engine(with_driver(request.getfixturevalue("postgres_url"))).begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


# Rules that the barrage's own samples and hosts can trip, so that alerts exist to list and watch.
HOSTILE_RULES = """
groups:
  - name: hostile
    interval: 200ms
    rules:
      - alert: AnythingHigh
        metric: seed_metric
        aggregation: max
        window: 1h
        group_by: [node]
        op: ">"
        threshold: 1
      - alert: HostGone
        liveness: [stale, offline]
"""

# The credential each RPC is mostly called with, so that most calls get past authentication.
_USUAL_CREDENTIAL = {
    "ReloadRules": OPERATOR_TOKEN,
    "ReloadAlertRules": OPERATOR_TOKEN,
    "CreateSilence": OPERATOR_TOKEN,
    "ExpireSilence": OPERATOR_TOKEN,
    "RegisterAgent": ENROLLMENT_TOKEN,
    "AuthenticateAgent": SERVICE_TOKEN,
    "ApproveAgent": OPERATOR_TOKEN,
    "DeregisterAgent": OPERATOR_TOKEN,
}


def _credentials(platform: Platform, method: str) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    tokens = [ENROLLMENT_TOKEN, OPERATOR_TOKEN, SERVICE_TOKEN, platform.seed_token, "iwa_" + "x" * 43, "a" * 8000]
    usual = _USUAL_CREDENTIAL.get(method, platform.seed_token)
    return st.one_of(
        st.just((("authorization", f"Bearer {usual}"),)),
        st.just((("authorization", f"Bearer {usual}"),)),
        st.just(()),
        st.sampled_from(tokens).map(lambda token: (("authorization", f"Bearer {token}"),)),
        st.sampled_from([(("authorization", "Basic Zm9vOmJhcg=="),), (("authorization", "Bearer"),)]),
    )


def _call(platform: Platform, service: str, method: MethodDescriptor, data: st.DataObject) -> grpc.StatusCode:
    """One hostile call; the status it ended with."""
    channel = platform.channels[service]
    path = f"/{SERVICES[service].full_name}/{method.name}"
    request_type = method.input_type
    response = message_factory.GetMessageClass(method.output_type)
    metadata = data.draw(_credentials(platform, method.name), label="metadata")
    known = [platform.sparring_id, SPARRING_HOST, "seed_metric", 'seed_metric{node="s"}', platform.seed_token]
    try:
        if method.client_streaming:
            batches = data.draw(st.lists(messages(request_type, known), max_size=4), label="requests")
            payloads = [b.SerializeToString() for b in batches]
            if payloads and data.draw(st.booleans(), label="cut off"):
                # A stream cut off mid-message: the last one ends early.
                payloads[-1] = payloads[-1][: data.draw(st.integers(0, max(0, len(payloads[-1]) - 1)))]
            call = channel.stream_stream(
                path, request_serializer=lambda b: b, response_deserializer=response.FromString
            )
            replies = call(iter(payloads), metadata=metadata, timeout=20)
            for _ in replies:
                pass
        elif method.server_streaming:
            request = data.draw(messages(request_type, known), label="request")
            call = channel.unary_stream(
                path, request_serializer=type(request).SerializeToString, response_deserializer=response.FromString
            )
            replies = call(request, metadata=metadata, timeout=1.5)
            for count, _ in enumerate(replies):
                if count >= 2:
                    replies.cancel()
                    break
        else:
            request = data.draw(messages(request_type, known), label="request")
            call = channel.unary_unary(
                path, request_serializer=type(request).SerializeToString, response_deserializer=response.FromString
            )
            call(request, metadata=metadata, timeout=20)
    except grpc.RpcError as exc:
        code = exc.code()
        allowed = DOCUMENTED | (LIVE_STREAM_END if method.server_streaming and not method.client_streaming else set())
        assert code in allowed, f"{path} answered {code.name}: {exc.details()}"
        return code
    return grpc.StatusCode.OK


def _still_sound(platform: Platform) -> None:
    for name, channel in platform.channels.items():
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, f"{name} is no longer healthy"
    assert _seed_series(platform.channels) == platform.seed_series, "the seed host's samples changed"
    service = (("authorization", f"Bearer {SERVICE_TOKEN}"),)
    agent = agents_pb2_grpc.AgentServiceStub(platform.channels["agents"]).GetAgent(
        agents_pb2.GetAgentRequest(hostname=SEED_HOST), metadata=service, timeout=5
    )
    assert agent.agent.agent_id == platform.seed_agent.agent_id and dict(agent.agent.labels) == {"env": "seed"}
    growth = psutil.Process().memory_info().rss - platform.rss_at_start
    assert growth < MEMORY_GROWTH_LIMIT, f"memory grew by {growth / 2**20:.0f} MiB"


@pytest.mark.parametrize(("service", "method_name"), METHODS, ids=[f"{s}.{m}" for s, m in METHODS])
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(data=st.data())
def test_every_rpc_survives_hostile_input(platform: Platform, service: str, method_name: str, data: st.DataObject):
    method = SERVICES[service].methods_by_name[method_name]
    _call(platform, service, method, data)
    _still_sound(platform)


def test_the_suite_drives_every_rpc_of_every_service():
    """A new RPC is attacked too, without anyone remembering to add it here."""
    assert {m for _, m in METHODS} >= {"RegisterAgent", "StreamMetrics", "WatchMetrics", "WatchAgent", "CreateSilence"}
    assert {service for service, _ in METHODS} == {"agents", "metrics", "alerts", "gateway"}
    assert len(METHODS) == sum(len(s.methods) for s in SERVICES.values())
