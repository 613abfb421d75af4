"""Conversions between epoch milliseconds and google.protobuf.Timestamp."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp


def to_timestamp(epoch_ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(epoch_ms)
    return stamp


def to_epoch_ms(stamp: Timestamp) -> int:
    return stamp.ToMilliseconds()
