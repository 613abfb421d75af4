"""Each service's own telemetry in the Prometheus text format, on an HTTP port of its own.

Every process builds one `CollectorRegistry` in its composition root and hands it to what
records into it (never the library's global registry: the tests run several services in one
process). The registry, the standard process series and the HTTP endpoint come from
agent/telemetry.py, shared with the host agent, which ships without this package.
`RpcTelemetry` is fed by the gRPC interceptor, so every RPC of every service is counted by
method and status code with its latency, in one place. `serve_telemetry` exposes a registry at
`/metrics` (prometheus_client's own HTTP server, in a daemon thread), or nothing when the port
setting is `off`.

Names follow Prometheus' conventions: the `infrawatch_` prefix, base units (seconds, bytes),
`_total` on counters (added by prometheus_client), labels for dimensions.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import Engine

from agent.telemetry import TelemetryEndpoint, new_registry, serve_telemetry

__all__ = [
    "LATENCY_BUCKETS",
    "RpcTelemetry",
    "TelemetryEndpoint",
    "new_registry",
    "serve_or_exit",
    "serve_telemetry",
    "watch_pool",
]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Seconds: from a sub-millisecond read to a slow stream setup."""


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


def watch_pool(registry: CollectorRegistry, engine: Engine) -> None:
    """infrawatch_db_pool_connections{state}: the engine's pooled connections in use and idle."""
    pool = engine.pool
    connections = Gauge(
        "infrawatch_db_pool_connections",
        "Database connections of this process's pool, checked out (in use) or idle.",
        ["state"],
        registry=registry,
    )
    if hasattr(pool, "checkedout") and hasattr(pool, "checkedin"):
        connections.labels("checked_out").set_function(pool.checkedout)
        connections.labels("idle").set_function(pool.checkedin)


def serve_or_exit(registry: CollectorRegistry, host: str, port: int | None, service: str) -> TelemetryEndpoint | None:
    """`serve_telemetry`, or exit 2 with one line naming the setting when the port cannot be had,
    as for the service's own gRPC port."""
    try:
        return serve_telemetry(registry, host, port, service)
    except OSError as exc:
        print(
            f"python -m services.{service}: cannot serve telemetry on {host}:{port}: {exc.strerror or exc}; "
            f"set INFRAWATCH_{service.upper()}_TELEMETRY_PORT to a free port, or to off",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
