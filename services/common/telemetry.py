"""Each service's own telemetry in the Prometheus text format, on an HTTP port of its own.

Every process builds one `CollectorRegistry` in its composition root and hands it to what
records into it (never the library's global registry: the tests run several services in one
process). `RpcTelemetry` is fed by the gRPC interceptor, so every RPC of every service is counted
by method and status code with its latency, in one place. `serve_telemetry` exposes a registry at
`/metrics` (prometheus_client's own HTTP server, in a daemon thread), or nothing when the port
setting is `off`.

Names follow Prometheus' conventions: the `infrawatch_` prefix, base units (seconds, bytes),
`_total` on counters (added by prometheus_client), labels for dimensions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from agent.logs import event

_log = logging.getLogger("infrawatch.telemetry")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Seconds: from a sub-millisecond read to a slow stream setup."""


def new_registry() -> CollectorRegistry:
    """A process's registry, with the standard process_* (CPU, memory, open files) and
    python_info series every Prometheus user expects."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class RpcTelemetry:
    """Counts and times every RPC a server handles, by service, method and status code."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter(
            "infrawatch_grpc_server_started",
            "RPCs started on the server.",
            ["grpc_service", "grpc_method"],
            registry=registry,
        )
        self.handled = Counter(
            "infrawatch_grpc_server_handled",
            "RPCs completed on the server, by status code.",
            ["grpc_service", "grpc_method", "grpc_code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "infrawatch_grpc_server_handling_seconds",
            "Time from an RPC's start to its end (a stream's whole life).",
            ["grpc_service", "grpc_method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    @staticmethod
    def _split(full_method: str) -> tuple[str, str]:
        service, _, method = full_method.lstrip("/").rpartition("/")
        return service, method

    def start(self, full_method: str) -> None:
        self.started.labels(*self._split(full_method)).inc()

    def finish(self, full_method: str, code: str, seconds: float) -> None:
        service, method = self._split(full_method)
        self.handled.labels(service, method, code).inc()
        self.seconds.labels(service, method).observe(seconds)


def process_gauge(registry: CollectorRegistry, name: str, help_text: str, read: Callable[[], float]) -> Gauge:
    """A gauge read at scrape time (queue depths, open streams, pool use)."""
    gauge = Gauge(name, help_text, registry=registry)
    gauge.set_function(read)
    return gauge


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
    server, _ = start_http_server(port, addr=host.strip("[]"), registry=registry)
    bound = int(server.server_address[1])
    event(_log, "telemetry endpoint listening", address=f"{host}:{bound}", path="/metrics")
    return TelemetryEndpoint(bound, server)
