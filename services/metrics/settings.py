"""Settings of the metrics service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import COMMON_VARS, Var, duration_seconds, port, positive_int, read_vars

METRICS_VARS: tuple[Var, ...] = (
    *COMMON_VARS,
    Var("INFRAWATCH_METRICS_PORT", "50052", "Port of the metrics service.", port),
    Var("INFRAWATCH_AGENTS_ADDRESS", "localhost:50051", "host:port of the agents service (verifies tokens)."),
    Var("INFRAWATCH_RETENTION", "15d", "Samples older than this are dropped.", duration_seconds),
    Var(
        "INFRAWATCH_RETENTION_CHECK_EVERY",
        "10m",
        "How often the retention task looks for data to drop.",
        duration_seconds,
    ),
    Var(
        "INFRAWATCH_MAX_SERIES_PER_BATCH", "20000", "Series considered per batch; the rest are rejected.", positive_int
    ),
    Var("INFRAWATCH_MAX_SERIES_PER_AGENT", "50000", "Cardinality limit: series one agent may create.", positive_int),
    Var(
        "INFRAWATCH_MAX_FUTURE_SKEW",
        "10m",
        "Samples further than this ahead of the server clock are rejected.",
        duration_seconds,
    ),
    Var("INFRAWATCH_MAX_QUERY_POINTS", "1000000", "Most points one query may return.", positive_int),
    Var("INFRAWATCH_AUTH_CACHE_TTL", "60s", "How long a verified agent token is trusted.", duration_seconds),
    Var("INFRAWATCH_DOWNSTREAM_TIMEOUT", "5s", "Deadline of calls to the agents service.", duration_seconds),
)


@dataclass(frozen=True)
class MetricsSettings:
    database_url: str
    data_dir: str
    bind_host: str
    log_level: str
    shutdown_grace: float
    max_message_bytes: int
    metrics_port: int
    agents_address: str
    retention: float
    retention_check_every: float
    max_series_per_batch: int
    max_series_per_agent: int
    max_future_skew: float
    max_query_points: int
    auth_cache_ttl: float
    downstream_timeout: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> MetricsSettings:
        return cls(**read_vars(METRICS_VARS, environ))
