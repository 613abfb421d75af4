"""One JSON POST with a deadline for the whole exchange, not per read.

urllib's timeout bounds each socket read, so a receiver that trickles one byte every few seconds
holds the caller forever. Here a timer shuts the socket down when the deadline passes, which
ends any read or write in progress: no receiver can hold a delivery thread longer than its
timeout.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import urllib.parse
from dataclasses import dataclass

USER_AGENT = "InfraWatch-Alerts/0.1"


class PostFailed(OSError):
    """The POST did not get a 2xx answer; `status` is the HTTP status (0 when there was none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        """A 4xx (other than 408 and 429) says the request itself is wrong: sending it again cannot help."""
        return not (400 <= self.status < 500) or self.status in (408, 429)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def post_json(url: str, body: object, timeout_s: float, headers: dict[str, str] | None = None) -> Answer:
    """POST `body` as JSON to `url` and read the answer, all within `timeout_s`; raises PostFailed
    (a non-2xx answer, with its status) or OSError (no answer in time, no connection)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PostFailed(f"{url!r} is not an http:// or https:// URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection: http.client.HTTPConnection = (
        http.client.HTTPSConnection(parts.hostname, port, timeout=timeout_s, context=ssl.create_default_context())
        if parts.scheme == "https"
        else http.client.HTTPConnection(parts.hostname, port, timeout=timeout_s)
    )
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(timeout_s, cut)
    timer.daemon = True
    timer.start()
    try:
        data = json.dumps(body).encode()
        connection.request(
            "POST",
            path,
            body=data,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **(headers or {})},
        )
        response = connection.getresponse()
        answer = Answer(response.status, response.read(64 * 1024))
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise TimeoutError(f"no complete answer within {timeout_s:g} s") from None
        raise OSError(str(exc) or type(exc).__name__) from None
    finally:
        timer.cancel()
        connection.close()
    if expired.is_set():
        raise TimeoutError(f"no complete answer within {timeout_s:g} s")
    if not 200 <= answer.status < 300:
        text = answer.body[:200].decode(errors="replace").strip()
        raise PostFailed(f"HTTP {answer.status}{': ' + text if text else ''}", answer.status)
    return answer
