"""The agent's own telemetry in the Prometheus text format, and the pieces every InfraWatch
process shares for it (the services import them from here: the agent ships without them).

`serve_telemetry` runs prometheus_client's HTTP server on a daemon thread for one registry built
by `new_registry` (never the library's global one: tests run several processes' worth of
services in one interpreter). The agent's series are read at scrape time from the objects that
already keep them (`AgentCollector`), so collecting and sending cost nothing extra.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.logs import event

_log = logging.getLogger("infrawatch.telemetry")


def new_registry() -> CollectorRegistry:
    """A process's registry, with the standard process_* (CPU, memory, open files) and
    python_info series every Prometheus user expects."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def telemetry_port(raw: str) -> int | None:
    """A TCP port, or None for `off` (no telemetry endpoint)."""
    if raw.strip().lower() in ("off", "none", "disabled", "false"):
        return None
    rule = "must be a TCP port between 0 and 65535, or off"
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(rule) from None
    if not 0 <= value <= 65535:
        raise ValueError(rule)
    return value


def telemetry_address(raw: str) -> tuple[str, int] | None:
    """host:port (`:port` for every interface), or None for `off`."""
    if raw.strip().lower() in ("off", "none", "disabled", "false"):
        return None
    host, sep, port = raw.strip().rpartition(":")
    if not sep:
        raise ValueError("must be host:port (e.g. 127.0.0.1:9155 or :9155), or off")
    number = telemetry_port(port)
    if number is None:
        raise ValueError("must be host:port (e.g. 127.0.0.1:9155 or :9155), or off")
    return host.strip("[]") or "::", number


@dataclass
class TelemetryEndpoint:
    """A running /metrics endpoint; `close` stops it."""

    port: int
    server: WSGIServer

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_telemetry(registry: CollectorRegistry, host: str, port: int | None, service: str) -> TelemetryEndpoint | None:
    """Serve `registry` at http://host:port/metrics (port 0: any free port); None when off."""
    if port is None:
        event(_log, "telemetry endpoint off", service=service)
        return None
    server, _ = start_http_server(port, addr=host.strip("[]") or "::", registry=registry)
    bound = int(server.server_address[1])
    event(_log, "telemetry endpoint listening", address=f"{host}:{bound}", path="/metrics")
    return TelemetryEndpoint(bound, server)


@dataclass
class AgentReadings:
    """Where the agent's telemetry is read from at scrape time."""

    buffered_batches: Callable[[], int]
    oldest_unsent_age_s: Callable[[], float]
    dropped_batches: Callable[[], int]
    acknowledged_batches: Callable[[], int]
    rejected_samples: Callable[[], Mapping[str, int]]
    collection_rounds: Callable[[], int]
    streaming: Callable[[], bool]


class AgentCollector(Collector):
    def __init__(self, readings: AgentReadings) -> None:
        self._readings = readings

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        r = self._readings
        yield GaugeMetricFamily(
            "infrawatch_agent_buffer_batches",
            "Collected batches not yet acknowledged by the server.",
            r.buffered_batches(),
        )
        yield GaugeMetricFamily(
            "infrawatch_agent_buffer_oldest_unsent_age_seconds",
            "Age of the oldest batch not yet acknowledged (0 when none is waiting).",
            r.oldest_unsent_age_s(),
        )
        yield CounterMetricFamily(
            "infrawatch_agent_buffer_dropped_batches",
            "Batches dropped unsent because the buffer was full (the oldest go first).",
            r.dropped_batches(),
        )
        yield CounterMetricFamily(
            "infrawatch_agent_acknowledged_batches",
            "Batches the metrics service acknowledged.",
            r.acknowledged_batches(),
        )
        rejected = CounterMetricFamily(
            "infrawatch_agent_rejected_samples", "Samples the metrics service refused, by reason.", labels=["reason"]
        )
        for reason, count in sorted(r.rejected_samples().items()):
            rejected.add_metric([reason.lower()], count)
        yield rejected
        yield CounterMetricFamily(
            "infrawatch_agent_collection_rounds", "Rounds of host metrics collected.", r.collection_rounds()
        )
        yield GaugeMetricFamily(
            "infrawatch_agent_streaming", "1 while the metrics stream is up and acknowledging.", float(r.streaming())
        )
