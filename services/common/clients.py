"""Outbound gRPC calls: every call has a deadline; idempotent ones retry transient failures."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import grpc

from agent.backoff import Backoff

Response = TypeVar("Response")

TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE})


def call_idempotent(
    call: Callable[[float], Response],
    *,
    timeout_s: float,
    attempts: int = 3,
    stop: threading.Event | None = None,
) -> Response:
    """Run `call(timeout)` and retry it on UNAVAILABLE with jittered backoff.

    Only for idempotent calls. `stop`, when set, interrupts the backoff so shutdown is not delayed.
    """
    backoff = Backoff(base_s=0.05, cap_s=2.0)
    for attempt in range(attempts):
        try:
            return call(timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code not in TRANSIENT or attempt == attempts - 1 or backoff.wait(stop):
                raise
    raise AssertionError("unreachable")
