"""Outbound gRPC calls: every call has a deadline; idempotent ones retry transient failures."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import TypeVar

import grpc

Response = TypeVar("Response")

TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE})


def backoff_delays(attempts: int, base_s: float = 0.05, cap_s: float = 2.0) -> list[float]:
    """Full-jitter exponential backoff: attempt n waits uniformly up to base * 2^n, capped."""
    return [random.uniform(0, min(cap_s, base_s * 2**n)) for n in range(attempts - 1)]


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
    delays = backoff_delays(attempts)
    for attempt in range(attempts):
        try:
            return call(timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code not in TRANSIENT or attempt == attempts - 1:
                raise
            if stop is not None:
                if stop.wait(delays[attempt]):
                    raise
            else:
                threading.Event().wait(delays[attempt])
    raise AssertionError("unreachable")
