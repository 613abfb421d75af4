"""Conversions between epoch milliseconds and google.protobuf.Timestamp, and RFC 3339 text."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import InvalidArgument

ZERO_TIME = "0001-01-01T00:00:00Z"
"""How Alertmanager and Prometheus' API write "no time" (Go's zero time)."""


def rfc3339(epoch_ms: int | None) -> str:
    """An instant as RFC 3339 text in UTC with milliseconds; None is the zero time."""
    if epoch_ms is None:
        return ZERO_TIME
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_timestamp(epoch_ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(epoch_ms)
    return stamp


def to_epoch_ms(stamp: Timestamp, field: str = "timestamp", round_up: bool = False) -> int:
    """Milliseconds since the epoch, a fraction of a millisecond dropped (or, `round_up`, counted
    as the next one: the first whole millisecond at or after the instant, how a range's start is
    read so that it never takes in a sample before it); InvalidArgument (naming `field`) for a
    Timestamp outside 0001-01-01 .. 9999-12-31 or with nanos out of range, as protobuf defines it."""
    try:
        return stamp.ToMilliseconds() + (1 if round_up and stamp.nanos % 1_000_000 else 0)
    except ValueError as exc:
        raise InvalidArgument(f"{field} is not a valid timestamp: {exc}") from None


def to_milliseconds(duration: Duration, field: str = "duration") -> int:
    """A Duration in milliseconds; InvalidArgument (naming `field`) when out of protobuf's range."""
    try:
        return duration.ToMilliseconds()
    except ValueError as exc:
        raise InvalidArgument(f"{field} is not a valid duration: {exc}") from None
