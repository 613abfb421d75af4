"""Settings read from INFRAWATCH_* environment variables.

Each service declares the variables it reads as `Var`s; `read_vars` parses and
validates them all at start-up so a bad value stops the process with a message
naming the variable, instead of failing later in the middle of a request.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from agent.telemetry import telemetry_port
from agent.values import (
    ConfigError,
    boolean,
    duration_seconds,
    log_level,
    port,
    positive_float,
    positive_int,
    readable_file,
    required_secret,
)

optional_port = telemetry_port
"""A port number, or `off` (None): for HTTP sides a deployment may switch off."""

__all__ = [
    "ConfigError",
    "Var",
    "boolean",
    "duration_seconds",
    "log_level",
    "port",
    "positive_float",
    "positive_int",
    "read_vars",
]


@dataclass(frozen=True)
class Var:
    """One environment variable: its name, default, parser and help text."""

    name: str
    default: str
    help: str
    parse: Callable[[str], Any] = str


def read_vars(spec: Sequence[Var], environ: Mapping[str, str]) -> dict[str, Any]:
    """Parse every variable of `spec`, keyed by the name without the INFRAWATCH_ prefix, lowercased."""
    values: dict[str, Any] = {}
    for var in spec:
        raw = environ.get(var.name, var.default)
        try:
            values[var.name.removeprefix("INFRAWATCH_").lower()] = var.parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{var.name}={raw!r} is invalid: {exc}") from None
    return values


COMMON_VARS: tuple[Var, ...] = (
    Var(
        "INFRAWATCH_DATABASE_URL",
        "",
        "SQLAlchemy URL of the store, e.g. postgresql://user@host:5432/db. "
        "Empty means the embedded SQLite file under INFRAWATCH_DATA_DIR.",
    ),
    Var("INFRAWATCH_DATA_DIR", "./data", "Directory of the embedded SQLite files."),
    Var("INFRAWATCH_BIND_HOST", "[::]", "Address the gRPC server listens on."),
    Var("INFRAWATCH_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR.", log_level),
    Var(
        "INFRAWATCH_SHUTDOWN_GRACE",
        "10s",
        "On SIGTERM, how long in-flight calls get to finish.",
        duration_seconds,
    ),
    Var(
        "INFRAWATCH_MAX_MESSAGE_BYTES",
        str(16 * 1024 * 1024),
        "Largest gRPC message accepted or sent, in bytes.",
        positive_int,
    ),
)


OPERATOR_TOKEN = Var(
    "INFRAWATCH_OPERATOR_TOKEN",
    "",
    "Bearer token of operators: deregistering and approving hosts, and reads when INFRAWATCH_PROTECT_READS "
    "is on. Empty disables operator actions.",
)
SERVICE_TOKEN = Var(
    "INFRAWATCH_SERVICE_TOKEN",
    "",
    "Required. The secret InfraWatch services present to each other (the same value on every service): "
    "it verifies agent tokens and reads on an operator's behalf. `make run` generates one.",
    required_secret,
)
PROTECT_READS = Var(
    "INFRAWATCH_PROTECT_READS",
    "false",
    "Require the operator token (or the service token) on read calls too.",
    boolean,
)
HTTP_KEEPALIVE = Var(
    "INFRAWATCH_HTTP_KEEPALIVE",
    "2m",
    "How long an HTTP server keeps an idle kept-alive connection open. Longer than the clients': Go's "
    "(Prometheus, Grafana) keep idle connections 90 s, and a server closing first makes them retry on a reset.",
    duration_seconds,
)
SERVER_TLS_VARS: tuple[Var, ...] = (
    Var(
        "INFRAWATCH_TLS_CERT",
        "",
        "PEM certificate (chain) the gRPC server presents; with _KEY turns TLS on.",
        readable_file,
    ),
    Var("INFRAWATCH_TLS_KEY", "", "PEM private key of INFRAWATCH_TLS_CERT.", readable_file),
    Var(
        "INFRAWATCH_TLS_CLIENT_CA",
        "",
        "PEM CA bundle; when set, every client must present a certificate signed by it (mutual TLS).",
        readable_file,
    ),
)
CLIENT_TLS_VARS: tuple[Var, ...] = (
    Var(
        "INFRAWATCH_TLS_CA",
        "",
        "PEM CA bundle that signs the other services' certificates; when set, calls to them use TLS.",
        readable_file,
    ),
    Var(
        "INFRAWATCH_TLS_CLIENT_CERT",
        "",
        "PEM certificate presented to services that require mutual TLS. Default: INFRAWATCH_TLS_CERT.",
        readable_file,
    ),
    Var(
        "INFRAWATCH_TLS_CLIENT_KEY",
        "",
        "PEM key of INFRAWATCH_TLS_CLIENT_CERT. Default: INFRAWATCH_TLS_KEY.",
        readable_file,
    ),
    Var(
        "INFRAWATCH_TLS_SERVER_NAME",
        "",
        "Name expected in the other services' certificates, when it differs from the host in their address.",
    ),
)


@dataclass(frozen=True)
class ServerTlsSettings:
    """The SERVER_TLS_VARS part of a service's settings."""

    tls_cert: str
    tls_key: str
    tls_client_ca: str


@dataclass(frozen=True)
class TlsSettings(ServerTlsSettings):
    """SERVER_TLS_VARS and CLIENT_TLS_VARS: a service that also calls other services."""

    tls_ca: str
    tls_client_cert: str
    tls_client_key: str
    tls_server_name: str


def check_server_tls(values: dict[str, Any]) -> None:
    """A certificate without its key (or the reverse), or mTLS without a certificate, is a mistake."""
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise ConfigError("INFRAWATCH_TLS_CERT and INFRAWATCH_TLS_KEY are set together or not at all")
    if values["tls_client_ca"] and not values["tls_cert"]:
        raise ConfigError("INFRAWATCH_TLS_CLIENT_CA (mutual TLS) needs INFRAWATCH_TLS_CERT and INFRAWATCH_TLS_KEY")


Settings = TypeVar("Settings")


def settings_from_command_line(
    prog: str,
    description: str,
    spec: Sequence[Var],
    from_env: Callable[[Mapping[str, str]], Settings],
    argv: list[str] | None,
) -> Settings:
    """Handle --help (which lists `spec`), then read the settings; a bad one exits with status 2
    and a message naming the variable."""
    argument_parser(prog, description, spec).parse_args(argv)
    try:
        return from_env(os.environ)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def exit_cannot_listen(address: str, setting: str) -> NoReturn:
    """End a program whose port cannot be had with one line naming the address and the setting
    (exit 2), not a traceback: the commonest start-up mistake, and the person needs the name."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    program = f"python -m {spec.name.removesuffix('.__main__')}" if spec is not None else "infrawatch"
    print(
        f"{program}: cannot listen on {address}: the port is in use, or the address is not one of this "
        f"host's; set {setting} to a free port (or INFRAWATCH_BIND_HOST to this host's address)",
        file=sys.stderr,
    )
    raise SystemExit(2)


def argument_parser(prog: str, description: str, spec: Sequence[Var]) -> argparse.ArgumentParser:
    """An argparse parser whose --help lists every environment variable the service reads."""
    lines = ["environment variables (all optional):"]
    for var in spec:
        default = var.default if var.default else "(empty)"
        lines.append(f"  {var.name}\n      {var.help} Default: {default}")
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


TELEMETRY_PORTS = {"gateway": 9150, "agents": 9151, "metrics": 9152, "alerts": 9153, "console": 9154, "launcher": 9156}
"""Each service's default telemetry port, and `make run`'s launcher's (the host agent's is 9155, in
agent/config.py)."""


def telemetry_var(service: str) -> Var:
    """INFRAWATCH_<SERVICE>_TELEMETRY_PORT: one name per service, so services sharing one
    environment (`make run`, the tests) each keep their own port."""
    return Var(
        f"INFRAWATCH_{service.upper()}_TELEMETRY_PORT",
        str(TELEMETRY_PORTS[service]),
        "HTTP port of this process's own telemetry in the Prometheus text format (GET /metrics), "
        "on INFRAWATCH_BIND_HOST; `off` serves none.",
        telemetry_port,
    )
