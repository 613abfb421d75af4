"""Settings of the web console."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import (
    CLIENT_TLS_VARS,
    COMMON_VARS,
    HTTP_KEEPALIVE,
    PROTECT_READS,
    Var,
    duration_seconds,
    port,
    read_vars,
    telemetry_var,
)

CONSOLE_VARS: tuple[Var, ...] = (
    *(var for var in COMMON_VARS if var.name in ("INFRAWATCH_BIND_HOST", "INFRAWATCH_LOG_LEVEL")),
    Var("INFRAWATCH_CONSOLE_PORT", "8080", "HTTP port of the web console.", port),
    HTTP_KEEPALIVE,
    telemetry_var("console"),
    Var("INFRAWATCH_GATEWAY_ADDRESS", "localhost:50050", "host:port of the gateway (the console's only backend)."),
    PROTECT_READS,
    Var("INFRAWATCH_SESSION_TTL", "12h", "How long a console login lasts.", duration_seconds),
    Var("INFRAWATCH_DOWNSTREAM_TIMEOUT", "5s", "Deadline of each call to the gateway.", duration_seconds),
    *CLIENT_TLS_VARS,
)


@dataclass(frozen=True)
class ConsoleSettings:
    bind_host: str
    log_level: str
    console_port: int
    console_telemetry_port: int | None
    http_keepalive: float
    gateway_address: str
    protect_reads: bool
    session_ttl: float
    downstream_timeout: float
    tls_ca: str
    tls_client_cert: str
    tls_client_key: str
    tls_server_name: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ConsoleSettings:
        return cls(**read_vars(CONSOLE_VARS, environ))
