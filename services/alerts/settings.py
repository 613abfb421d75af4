"""Settings of the alerts service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
    positive_int,
    read_vars,
    telemetry_var,
)

DEFAULT_RULES = Path(__file__).parent / "default_rules.yaml"

ALERTS_VARS: tuple[Var, ...] = (
    *COMMON_VARS,
    Var("INFRAWATCH_ALERTS_PORT", "50053", "Port of the alerts service.", port),
    telemetry_var("alerts"),
    Var("INFRAWATCH_AGENTS_ADDRESS", "localhost:50051", "host:port of the agents service (liveness rules)."),
    Var("INFRAWATCH_METRICS_ADDRESS", "localhost:50052", "host:port of the metrics service (metric rules)."),
    Var(
        "INFRAWATCH_ALERT_RULES",
        str(DEFAULT_RULES),
        "YAML file of rule groups and notification routes (check one with `python -m services.alerts check FILE`). "
        "Default: the built-in rules (host down, CPU, memory, filesystems).",
    ),
    Var(
        "INFRAWATCH_ALERTING_CONFIG",
        "",
        "Optional YAML file in the shape of prometheus.yml's `global.external_labels` and `alerting.alertmanagers` "
        "(static_configs targets, scheme, path_prefix, timeout): where alerts go to an existing Alertmanager.",
    ),
    Var(
        "INFRAWATCH_EXTERNAL_URL",
        "http://localhost:8080",
        "The URL people reach InfraWatch's console at: alerts' generatorURL links to its Explore page, and "
        "notifications carry it as externalURL.",
    ),
    Var(
        "INFRAWATCH_ALERT_RESEND_DELAY",
        "1m",
        "How often a firing alert is sent to Alertmanager again (Prometheus' --rules.alert.resend-delay).",
        duration_seconds,
    ),
    Var("INFRAWATCH_EVALUATION_WORKERS", "8", "Rules evaluated at once.", positive_int),
    Var("INFRAWATCH_DOWNSTREAM_TIMEOUT", "5s", "Deadline of calls to metrics and agents.", duration_seconds),
    OPERATOR_TOKEN,
    SERVICE_TOKEN,
    PROTECT_READS,
    *SERVER_TLS_VARS,
    *CLIENT_TLS_VARS,
)


@dataclass(frozen=True)
class AlertsSettings(TlsSettings):
    database_url: str
    data_dir: str
    bind_host: str
    log_level: str
    shutdown_grace: float
    max_message_bytes: int
    alerts_port: int
    alerts_telemetry_port: int | None
    agents_address: str
    metrics_address: str
    alert_rules: str
    alerting_config: str
    external_url: str
    alert_resend_delay: float
    evaluation_workers: int
    downstream_timeout: float
    operator_token: str
    service_token: str
    protect_reads: bool

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AlertsSettings:
        values = read_vars(ALERTS_VARS, environ)
        check_server_tls(values)
        return cls(**values)
