"""No receiver holds another back: a receiver that trickles its answer one byte every 2 s is cut
off at its timeout, a slow receiver with four groups routed to it does not delay a healthy one,
and a 4xx is not retried. Real HTTP servers, the real alerts service over real gRPC."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from services.alerts.http_post import PostFailed, post_json
from tests.integration.conftest import running_alerts
from tests.integration.test_alerts_grpc import depth, wait_for

RULES = """
groups:
  - name: g
    interval: 200ms
    rules:
      - alert: Busy
        metric: queue_depth
        aggregation: last
        window: 1m
        group_by: [queue]
        op: ">="
        threshold: 100
notifications:
  receivers:
    - {{name: slow, webhook_url: "http://127.0.0.1:{slow}/hook", timeout: 1s}}
    - {{name: healthy, webhook_url: "http://127.0.0.1:{healthy}/hook", timeout: 1s}}
    - {{name: refusing, webhook_url: "http://127.0.0.1:{refusing}/hook", timeout: 1s}}
  routes:
    - {{receiver: slow, matchers: 'queue=~"slow.*"', group_by: [queue], group_wait: 0s, group_interval: 1s}}
    - {{receiver: healthy, matchers: 'queue="fast"', group_by: [queue], group_wait: 0s, group_interval: 1s}}
    - {{receiver: refusing, matchers: 'queue="refused"', group_by: [queue], group_wait: 0s, group_interval: 1s}}
"""


class Trickler:
    """Accepts, reads the request, then answers one byte every `every_s` seconds, forever."""

    def __init__(self, every_s: float = 2.0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.every_s = every_s
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            try:
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 1000:
                    if self.closed.wait(self.every_s):
                        return
                    connection.sendall(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


class Recording:
    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arrived: list[float] = []
        recording = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                recording.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                recording.arrived.append(time.monotonic())
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"bad payload" if status >= 400 else b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    slow = Trickler()
    yield slow
    slow.close()


def test_a_trickling_receiver_is_cut_off_at_the_deadline_of_the_whole_post(trickler: Trickler):
    began = time.monotonic()
    with pytest.raises(TimeoutError, match="within 1 s"):
        post_json(f"http://127.0.0.1:{trickler.port}/hook", {"a": 1}, timeout_s=1.0)
    assert time.monotonic() - began < 2.0  # urllib's per-read timeout would wait for ever


def test_a_4xx_is_a_refusal_that_says_so():
    refusing = Recording(status=400)
    try:
        with pytest.raises(PostFailed) as raised:
            post_json(f"http://127.0.0.1:{refusing.port}/hook", {"a": 1}, timeout_s=1.0)
        assert raised.value.status == 400 and not raised.value.retryable and "bad payload" in str(raised.value)
    finally:
        refusing.server.shutdown()


def test_a_slow_receiver_delays_no_other_and_a_refusing_one_is_not_retried(
    metrics_engine, agents_address, metrics_harness, metrics_stub, agent_token, trickler: Trickler, tmp_path: Path
):
    healthy, refusing = Recording(), Recording(status=400)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(slow=trickler.port, healthy=healthy.port, refusing=refusing.port))
    try:
        with running_alerts(metrics_engine, agents_address, metrics_harness.address, rules):
            for queue in ("slow-1", "slow-2", "slow-3", "slow-4"):
                depth(metrics_stub, agent_token, queue, 500)
            wait_for(lambda: trickler.connections >= 2, timeout=10)
            depth(metrics_stub, agent_token, "refused", 500)
            began = time.monotonic()
            depth(metrics_stub, agent_token, "fast", 500)
            wait_for(lambda: healthy.bodies, timeout=10)
            assert healthy.arrived[0] - began < 3.0
            assert [a["labels"]["queue"] for a in healthy.bodies[0]["alerts"]] == ["fast"]
            wait_for(lambda: refusing.bodies, timeout=10)
            time.sleep(2.5)  # several ticks and a backoff's worth
            assert len(refusing.bodies) == 1  # refused once, not again and again
    finally:
        healthy.server.shutdown()
        refusing.server.shutdown()
