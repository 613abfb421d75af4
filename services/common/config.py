"""Settings read from INFRAWATCH_* environment variables.

Each service declares the variables it reads as `Var`s; `read_vars` parses and
validates them all at start-up so a bad value stops the process with a message
naming the variable, instead of failing later in the middle of a request.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


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


def _number(kind: type[int] | type[float], raw: str, rule: str) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(rule) from None


def port(raw: str) -> int:
    rule = "must be a TCP port between 0 and 65535"
    value = _number(int, raw, rule)
    if not 0 <= value <= 65535:
        raise ValueError(rule)
    return int(value)


def positive_float(raw: str) -> float:
    rule = "must be a number greater than 0"
    value = _number(float, raw, rule)
    if not value > 0:
        raise ValueError(rule)
    return float(value)


def positive_int(raw: str) -> int:
    rule = "must be a whole number greater than 0"
    value = _number(int, raw, rule)
    if value <= 0:
        raise ValueError(rule)
    return int(value)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(raw: str) -> float:
    """Parse a duration such as `500ms`, `30s`, `15m`, `2h`, `15d` into seconds."""
    match = _DURATION.match(raw.strip())
    if not match:
        raise ValueError("must be a duration like 30s, 15m, 2h or 15d")
    value = float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
    if value <= 0:
        raise ValueError("must be longer than 0")
    return value


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def log_level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return level


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
