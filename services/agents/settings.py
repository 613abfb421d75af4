"""Settings of the agents service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import (
    COMMON_VARS,
    OPERATOR_TOKEN,
    PROTECT_READS,
    SERVER_TLS_VARS,
    SERVICE_TOKEN,
    ConfigError,
    ServerTlsSettings,
    Var,
    check_server_tls,
    duration_seconds,
    port,
    positive_float,
    read_vars,
    telemetry_var,
)

AGENTS_VARS: tuple[Var, ...] = (
    *COMMON_VARS,
    Var("INFRAWATCH_AGENTS_PORT", "50051", "Port of the agents service.", port),
    telemetry_var("agents"),
    Var(
        "INFRAWATCH_HEARTBEAT_INTERVAL",
        "10s",
        "How often agents are told to send heartbeats.",
        duration_seconds,
    ),
    Var(
        "INFRAWATCH_STALE_AFTER_INTERVALS",
        "2",
        "An agent silent for more than this many heartbeat intervals is STALE.",
        positive_float,
    ),
    Var(
        "INFRAWATCH_OFFLINE_AFTER_INTERVALS",
        "5",
        "An agent silent for more than this many heartbeat intervals is OFFLINE.",
        positive_float,
    ),
    OPERATOR_TOKEN,
    SERVICE_TOKEN,
    Var(
        "INFRAWATCH_ENROLLMENT_TOKEN",
        "",
        "Secret a new host presents to register (the agent's --enrollment-token). Empty closes registration. "
        "`make run` generates one.",
    ),
    PROTECT_READS,
    *SERVER_TLS_VARS,
)


@dataclass(frozen=True)
class AgentsSettings(ServerTlsSettings):
    database_url: str
    data_dir: str
    bind_host: str
    log_level: str
    shutdown_grace: float
    max_message_bytes: int
    agents_port: int
    agents_telemetry_port: int | None
    heartbeat_interval: float
    stale_after_intervals: float
    offline_after_intervals: float
    operator_token: str
    service_token: str
    enrollment_token: str
    protect_reads: bool

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AgentsSettings:
        values = read_vars(AGENTS_VARS, environ)
        check_server_tls(values)
        settings = cls(**values)
        if settings.offline_after_intervals <= settings.stale_after_intervals:
            raise ConfigError(
                "INFRAWATCH_OFFLINE_AFTER_INTERVALS must be greater than INFRAWATCH_STALE_AFTER_INTERVALS"
            )
        return settings
