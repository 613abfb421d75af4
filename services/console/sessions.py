"""Console logins: the operator token stays on the server; the browser holds only a random session
id in an HttpOnly, SameSite=Strict cookie. Sessions live in memory (a restart asks again)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable

COOKIE = "iw_session"


class Sessions:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}

    def open(self, token: str) -> str:
        session = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
            self._tokens[session] = (token, now + self._ttl_s)
        return session

    def token(self, session: str | None) -> str:
        """The operator token behind a session, or '' for none or an expired one."""
        if not session:
            return ""
        with self._lock:
            found = self._tokens.get(session)
        if found is None or found[1] <= self._clock():
            return ""
        return found[0]

    def close(self, session: str | None) -> None:
        with self._lock:
            self._tokens.pop(session or "", None)
