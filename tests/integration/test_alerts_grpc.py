"""The alerts service over real gRPC, with real agents and metrics servers and a real HTTP receiver:
WatchAlerts, receivers that fail or hang, malformed silences, on both stores."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from infrawatch.alerts.v1 import alerts_pb2, alerts_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2 as pb
from services.common.timestamps import to_timestamp
from tests.integration.conftest import AS_OPERATOR, running_alerts

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
  receivers: [{{name: hook, webhook_url: "http://127.0.0.1:{port}/hook", timeout: 1s}}]
  routes: [{{receiver: hook, group_by: [queue], group_wait: 0s, group_interval: 1s}}]
"""


class FlakyReceiver:
    """Answers 500 `fail` times, hangs `hang_s` seconds on each request while set, then records."""

    def __init__(self) -> None:
        self.fail, self.hang_s, self.attempts = 0, 0.0, 0
        self.bodies: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.attempts += 1
                time.sleep(receiver.hang_s)
                failing = receiver.fail > 0
                receiver.fail -= 1
                if not failing:
                    receiver.bodies.append(body)
                self.send_response(500 if failing else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def wait_for(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def receiver():
    hook = FlakyReceiver()
    yield hook
    hook.server.shutdown()


@pytest.fixture
def alerts_stub(metrics_engine, agents_address, metrics_harness, receiver, tmp_path: Path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(port=receiver.server.server_address[1]))
    with (
        running_alerts(metrics_engine, agents_address, metrics_harness.address, rules) as address,
        grpc.insecure_channel(address) as channel,
    ):
        yield alerts_pb2_grpc.AlertServiceStub(channel)


def depth(metrics_stub, token: str, queue: str, value: float) -> None:
    batch = pb.MetricBatch(sequence=1)
    batch.series.add(
        labels=[pb.Label(name="__name__", value="queue_depth"), pb.Label(name="queue", value=queue)],
        timestamps_ms=[int(time.time() * 1000)],
        values=[value],
    )
    (ack,) = metrics_stub.StreamMetrics(iter([batch]), metadata=(("authorization", f"Bearer {token}"),), timeout=10)
    assert ack.samples_accepted == 1


def test_watch_alerts_sends_the_current_alerts_then_each_change(alerts_stub, metrics_stub, agent_token):
    depth(metrics_stub, agent_token, "emails", 500)
    wait_for(lambda: alerts_stub.ListAlerts(alerts_pb2.ListAlertsRequest(), timeout=5).alerts)
    watch = alerts_stub.WatchAlerts(alerts_pb2.WatchAlertsRequest(matchers='{alertname="Busy"}'), timeout=20)
    first = next(watch)
    assert first.snapshot and [a.labels["queue"] for a in first.alerts] == ["emails"]
    depth(metrics_stub, agent_token, "orders", 900)
    change = next(watch)
    assert not change.snapshot
    assert [(a.labels["queue"], a.state) for a in change.alerts] == [("orders", alerts_pb2.ALERT_STATE_FIRING)]
    watch.cancel()


def test_a_failing_receiver_is_retried_and_a_hanging_one_blocks_no_evaluation(
    alerts_stub, metrics_stub, agent_token, receiver: FlakyReceiver
):
    receiver.fail, receiver.hang_s = 2, 1.5  # two 500s, each after longer than the receiver's 1 s timeout
    depth(metrics_stub, agent_token, "emails", 500)
    wait_for(lambda: receiver.attempts >= 1)
    rules_before = alerts_stub.ListRules(alerts_pb2.ListRulesRequest(), timeout=5).rules[0].last_evaluation
    time.sleep(1.0)
    rules_after = alerts_stub.ListRules(alerts_pb2.ListRulesRequest(), timeout=5).rules[0].last_evaluation
    assert rules_after.ToMilliseconds() > rules_before.ToMilliseconds()  # evaluation went on meanwhile
    receiver.hang_s = 0.0
    wait_for(lambda: receiver.bodies, timeout=30)
    (body,) = receiver.bodies
    assert body["alerts"][0]["labels"]["queue"] == "emails" and receiver.attempts >= 3


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            alerts_pb2.CreateSilenceRequest(
                ends_at=to_timestamp(int(time.time() * 1000) + 60_000), author="a", comment="c"
            ),
            "at least one matcher",
        ),
        (
            alerts_pb2.CreateSilenceRequest(matchers=[alerts_pb2.Matcher(name="queue", value="x")], comment="c"),
            "ends_at is required",
        ),
        (
            alerts_pb2.CreateSilenceRequest(
                matchers=[alerts_pb2.Matcher(name="queue", type=alerts_pb2.MATCH_TYPE_REGEX, value="(")],
                ends_at=to_timestamp(int(time.time() * 1000) + 60_000),
                author="a",
                comment="c",
            ),
            "matcher queue",
        ),
    ],
)
def test_a_malformed_silence_is_invalid_argument_naming_the_rule(alerts_stub, request_, message):
    with pytest.raises(grpc.RpcError) as raised:
        alerts_stub.CreateSilence(request_, metadata=AS_OPERATOR, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in raised.value.details()
