"""Settings of the gateway."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import (
    CLIENT_TLS_VARS,
    COMMON_VARS,
    OPERATOR_TOKEN,
    PROTECT_READS,
    SERVER_TLS_VARS,
    SERVICE_TOKEN,
    TlsSettings,
    Var,
    check_server_tls,
    duration_seconds,
    port,
    read_vars,
    telemetry_var,
)


def metric_names(raw: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    if not names:
        raise ValueError("must name at least one metric, comma-separated")
    return names


# The gateway has no database: the store settings of COMMON_VARS do not apply to it.
GATEWAY_VARS: tuple[Var, ...] = (
    *(var for var in COMMON_VARS if var.name not in ("INFRAWATCH_DATABASE_URL", "INFRAWATCH_DATA_DIR")),
    Var("INFRAWATCH_GATEWAY_PORT", "50050", "Port of the gateway.", port),
    telemetry_var("gateway"),
    Var("INFRAWATCH_AGENTS_ADDRESS", "localhost:50051", "host:port of the agents service."),
    Var("INFRAWATCH_METRICS_ADDRESS", "localhost:50052", "host:port of the metrics service."),
    Var(
        "INFRAWATCH_ALERTS_ADDRESS",
        "localhost:50053",
        "host:port of the alerts service; empty: the gateway has no alerting part.",
    ),
    OPERATOR_TOKEN,
    SERVICE_TOKEN,
    PROTECT_READS,
    Var(
        "INFRAWATCH_KEY_METRICS",
        "cpu_usage_percent,memory_used_bytes,load1",
        "Metrics shown with every agent (their latest values), comma-separated.",
        metric_names,
    ),
    Var("INFRAWATCH_DOWNSTREAM_TIMEOUT", "5s", "Deadline of each call to agents or metrics.", duration_seconds),
    Var(
        "INFRAWATCH_WATCH_STATUS_EVERY",
        "2s",
        "How often WatchAgent re-reads the agent's status.",
        duration_seconds,
    ),
    *SERVER_TLS_VARS,
    *CLIENT_TLS_VARS,
)


@dataclass(frozen=True)
class GatewaySettings(TlsSettings):
    bind_host: str
    log_level: str
    shutdown_grace: float
    max_message_bytes: int
    gateway_port: int
    gateway_telemetry_port: int | None
    agents_address: str
    metrics_address: str
    alerts_address: str
    operator_token: str
    service_token: str
    protect_reads: bool
    key_metrics: tuple[str, ...]
    downstream_timeout: float
    watch_status_every: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GatewaySettings:
        values = read_vars(GATEWAY_VARS, environ)
        check_server_tls(values)
        return cls(**values)
