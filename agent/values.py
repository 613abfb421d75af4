"""Parsers of setting values (ports, durations, booleans, log levels), shared by the agent and the
services: a bad value raises ValueError saying what the rule is, and the caller names the setting."""

from __future__ import annotations

import re
from typing import Any


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


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


def readable_file(raw: str) -> str:
    """A path that must name a readable file, or empty for 'not set'."""
    path = raw.strip()
    if path:
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return path


def required_secret(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("must be set (a long random secret, e.g. from `openssl rand -base64 32`)")
    return value
