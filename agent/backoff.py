"""Jittered exponential backoff whose waits a shutdown can interrupt."""

from __future__ import annotations

import random
import threading
import time


class Backoff:
    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0) -> None:
        self._base_s = base_s
        self._cap_s = cap_s
        self._attempt = 0

    def next_delay(self) -> float:
        """Full jitter: uniform between 0 and base * 2^attempt, capped."""
        delay = random.uniform(0, min(self._cap_s, self._base_s * 2**self._attempt))
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 0

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Sleep the next delay; True when `stop` was set meanwhile."""
        if stop is None:
            time.sleep(self.next_delay())
            return False
        return stop.wait(self.next_delay())
