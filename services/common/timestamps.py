"""Conversions between epoch milliseconds and google.protobuf.Timestamp."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import InvalidArgument


def to_timestamp(epoch_ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(epoch_ms)
    return stamp


def to_epoch_ms(stamp: Timestamp, field: str = "timestamp") -> int:
    """Milliseconds since the epoch; InvalidArgument (naming `field`) for a Timestamp outside
    0001-01-01 .. 9999-12-31 or with nanos out of range, as protobuf defines the type."""
    try:
        return stamp.ToMilliseconds()
    except ValueError as exc:
        raise InvalidArgument(f"{field} is not a valid timestamp: {exc}") from None


def to_milliseconds(duration: Duration, field: str = "duration") -> int:
    """A Duration in milliseconds; InvalidArgument (naming `field`) when out of protobuf's range."""
    try:
        return duration.ToMilliseconds()
    except ValueError as exc:
        raise InvalidArgument(f"{field} is not a valid duration: {exc}") from None
