"""Settings of the metrics service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import (
    CLIENT_TLS_VARS,
    COMMON_VARS,
    HTTP_KEEPALIVE,
    OPERATOR_TOKEN,
    PROTECT_READS,
    SERVER_TLS_VARS,
    SERVICE_TOKEN,
    ConfigError,
    TlsSettings,
    Var,
    check_server_tls,
    duration_seconds,
    optional_port,
    port,
    positive_int,
    read_vars,
    telemetry_var,
)
from services.metrics.storage.chunks import MAX_CHUNK_SPAN_MS, PACKED_BLOCK_MS

METRICS_VARS: tuple[Var, ...] = (
    *COMMON_VARS,
    Var("INFRAWATCH_METRICS_PORT", "50052", "Port of the metrics service.", port),
    telemetry_var("metrics"),
    Var(
        "INFRAWATCH_PROM_PORT",
        "9201",
        "HTTP port of the Prometheus side on INFRAWATCH_BIND_HOST: remote-write in (POST /api/v1/write) "
        "and the PromQL query API (/api/v1/query, query_range, series, labels, ...); `off` serves none.",
        optional_port,
    ),
    HTTP_KEEPALIVE,
    Var(
        "INFRAWATCH_LOOKBACK_DELTA",
        "5m",
        "PromQL: how far back an instant vector looks for a series' latest sample (Prometheus' default).",
        duration_seconds,
    ),
    Var(
        "INFRAWATCH_PROMQL_MAX_SAMPLES",
        "20000000",
        "PromQL: most samples one query may read (16 bytes each in memory while it runs).",
        positive_int,
    ),
    Var(
        "INFRAWATCH_PROMQL_MAX_POINTS",
        "20000000",
        "PromQL: most values (series x steps, summed over a query's intermediate results) one query may "
        "hold; past it the query is refused before the memory is taken (9 bytes each).",
        positive_int,
    ),
    Var(
        "INFRAWATCH_PROMQL_TIMEOUT",
        "2m",
        "PromQL: longest a query may run (a request's `timeout` parameter can only shorten it).",
        duration_seconds,
    ),
    Var(
        "INFRAWATCH_PROMQL_WORKERS",
        "2",
        "PromQL: threads that evaluate queries, apart from the gRPC query threads so neither starves the other.",
        positive_int,
    ),
    Var(
        "INFRAWATCH_MAX_REMOTE_WRITE_BYTES",
        "67108864",
        "Largest remote-write request once decompressed (Prometheus sends well under 1 MiB).",
        positive_int,
    ),
    Var(
        "INFRAWATCH_MAX_SAMPLES_PER_WRITE",
        "500000",
        "Most samples one remote-write request may hold, counted while it is decoded (Prometheus sends 2,000).",
        positive_int,
    ),
    Var("INFRAWATCH_AGENTS_ADDRESS", "localhost:50051", "host:port of the agents service (verifies tokens)."),
    Var(
        "INFRAWATCH_ALERTS_ADDRESS",
        "localhost:50053",
        "host:port of the alerts service, which the Prometheus side's /api/v1/rules and /api/v1/alerts relay.",
    ),
    Var("INFRAWATCH_RETENTION", "15d", "Samples older than this are dropped.", duration_seconds),
    Var(
        "INFRAWATCH_MAINTENANCE_EVERY",
        "1m",
        "How often compaction and retention run in the background.",
        duration_seconds,
    ),
    Var(
        "INFRAWATCH_COMPACTION_WINDOW",
        "1h",
        "Closed windows of this size (at most 2h, dividing 6h) hold one chunk per series after compaction; "
        "closed 6-hour blocks then one per series and block.",
        duration_seconds,
    ),
    Var(
        "INFRAWATCH_COMPACTION_DELAY",
        "10m",
        "A window is compacted once it ended this long ago.",
        duration_seconds,
    ),
    Var(
        "INFRAWATCH_MAX_SERIES_PER_BATCH", "20000", "Series considered per batch; the rest are rejected.", positive_int
    ),
    Var("INFRAWATCH_MAX_SERIES_PER_AGENT", "50000", "Cardinality limit: series one agent may create.", positive_int),
    Var(
        "INFRAWATCH_MAX_SERIES_PER_WRITER",
        "250000",
        "Cardinality limit: series one remote-write credential may create (well below INFRAWATCH_MAX_SERIES, "
        "so one Prometheus cannot fill the store for every agent).",
        positive_int,
    ),
    Var(
        "INFRAWATCH_MAX_SERIES",
        "1000000",
        "Cardinality limit of the whole store (the in-memory index costs about 1-2 KB a series).",
        positive_int,
    ),
    Var(
        "INFRAWATCH_MAX_FUTURE_SKEW",
        "10m",
        "Samples further than this ahead of the server clock are rejected.",
        duration_seconds,
    ),
    Var("INFRAWATCH_MAX_QUERY_POINTS", "1000000", "Most points one query may return.", positive_int),
    Var(
        "INFRAWATCH_QUERY_PARALLELISM",
        "2",
        "PostgreSQL connections one wide aggregation is split over (about the database's spare cores).",
        positive_int,
    ),
    Var(
        "INFRAWATCH_MAX_STREAMS",
        "10000",
        "Open StreamMetrics calls one process holds; more are refused (RESOURCE_EXHAUSTED).",
        positive_int,
    ),
    Var(
        "INFRAWATCH_MAX_STREAMS_PER_AGENT",
        "16",
        "Open StreamMetrics calls one agent credential may hold (an agent needs one; a few while it reconnects).",
        positive_int,
    ),
    Var(
        "INFRAWATCH_MAX_WATCH_STREAMS",
        "1000",
        "Open WatchMetrics calls one process holds, apart from the ingest streams so watchers never take an "
        "agent's slot.",
        positive_int,
    ),
    Var(
        "INFRAWATCH_MAX_WATCH_STREAMS_PER_CALLER",
        "50",
        "Open WatchMetrics calls one credential, or one address without a credential, may hold.",
        positive_int,
    ),
    Var(
        "INFRAWATCH_INGEST_WORKERS",
        "4",
        "Threads that parse, check and commit batches (each stream has at most one batch in them).",
        positive_int,
    ),
    Var("INFRAWATCH_QUERY_WORKERS", "4", "Threads that answer queries.", positive_int),
    Var(
        "INFRAWATCH_AUTH_CACHE_TTL",
        "5s",
        "How long a verified agent token is trusted before it is checked again (a revoked token "
        "stops working within this).",
        duration_seconds,
    ),
    Var(
        "INFRAWATCH_AUTH_GRACE",
        "15m",
        "While the agents service is unreachable, tokens verified within this keep streaming.",
        duration_seconds,
    ),
    Var("INFRAWATCH_DOWNSTREAM_TIMEOUT", "5s", "Deadline of calls to the agents service.", duration_seconds),
    OPERATOR_TOKEN,
    SERVICE_TOKEN,
    PROTECT_READS,
    *SERVER_TLS_VARS,
    *CLIENT_TLS_VARS,
)


@dataclass(frozen=True)
class MetricsSettings(TlsSettings):
    database_url: str
    data_dir: str
    bind_host: str
    log_level: str
    shutdown_grace: float
    max_message_bytes: int
    metrics_port: int
    metrics_telemetry_port: int | None
    prom_port: int | None
    http_keepalive: float
    lookback_delta: float
    promql_max_samples: int
    promql_max_points: int
    promql_timeout: float
    promql_workers: int
    max_remote_write_bytes: int
    max_samples_per_write: int
    agents_address: str
    alerts_address: str
    retention: float
    maintenance_every: float
    compaction_window: float
    compaction_delay: float
    max_series_per_batch: int
    max_series_per_agent: int
    max_series_per_writer: int
    max_series: int
    max_future_skew: float
    max_query_points: int
    query_parallelism: int
    max_streams: int
    max_streams_per_agent: int
    max_watch_streams: int
    max_watch_streams_per_caller: int
    ingest_workers: int
    query_workers: int
    auth_cache_ttl: float
    auth_grace: float
    downstream_timeout: float
    operator_token: str
    service_token: str
    protect_reads: bool

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> MetricsSettings:
        values = read_vars(METRICS_VARS, environ)
        check_server_tls(values)
        settings = cls(**values)
        if settings.compaction_window * 1000 > MAX_CHUNK_SPAN_MS:
            raise ConfigError("INFRAWATCH_COMPACTION_WINDOW must be at most 2h (the longest a chunk may span)")
        window_ms = int(settings.compaction_window * 1000)
        if window_ms <= 0 or PACKED_BLOCK_MS % window_ms:
            raise ConfigError(
                "INFRAWATCH_COMPACTION_WINDOW must divide 6h evenly (e.g. 15m, 30m, 1h, 2h): compaction's "
                "second tier folds whole windows into 6-hour blocks"
            )
        return settings
