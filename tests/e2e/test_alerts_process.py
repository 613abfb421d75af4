"""The alerts service as a real process next to real agents and metrics processes, with a real
HTTP receiver in the test and the real agent: rules fire and resolve, a stopped agent fires the
host-down rule, a SIGKILL while firing neither forgets nor repeats, silences hold, and an invalid
reload keeps the rules that run."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from infrawatch.alerts.v1 import alerts_pb2, alerts_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2, metrics_pb2_grpc
from services.common.timestamps import to_timestamp
from tests.e2e.conftest import ENROLLMENT_TOKEN, start
from tests.e2e.processes import ServiceProcess, grpcurl, run_readme_recipe, wait_for

ALERTS_SERVICE = "infrawatch.alerts.v1.AlertService"
OPERATOR = (("authorization", "Bearer e2e-operator"),)

RULES = """
groups:
  - name: e2e
    interval: 300ms
    rules:
      - alert: TooHot
        metric: temperature_celsius
        aggregation: last
        window: 1m  # long enough that a silenced alert stays firing while the test looks
        group_by: [host, room]
        op: ">"
        threshold: 50
        for: 1s
        labels: {severity: critical}
        annotations: {summary: "{{ $labels.room }} is at {{ $value }} C"}
      - alert: HostDown
        liveness: [stale, offline]
        labels: {severity: page}
notifications:
  receivers:
    - name: hook
      webhook_url: http://127.0.0.1:{port}/hook
  routes:
    - receiver: hook
      group_by: [alertname, room]
      group_wait: 0s
      group_interval: 1s
      repeat_interval: 1h
"""


class Receiver:
    """A webhook receiver: records every notification, answers 200 (or 500 while `failing`)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.failing = False
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    if not receiver.failing:
                        receiver.bodies.append(body)
                self.send_response(500 if receiver.failing else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def about(self, alertname: str, status: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                alert
                for body in self.bodies
                for alert in body["alerts"]
                if alert["labels"]["alertname"] == alertname and (status is None or alert["status"] == status)
            ]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.server.shutdown()


@pytest.fixture
def alerts_env(platform_env: dict[str, str], receiver: Receiver, tmp_path: Path) -> dict[str, str]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("{port}", str(receiver.port)))
    return {**platform_env, "INFRAWATCH_ALERT_RULES": str(rules)}


def start_alerts(env: dict[str, str], tmp_path: Path, run: int = 0) -> tuple[ServiceProcess, str]:
    return start("services.alerts", env, "INFRAWATCH_ALERTS_PORT", ALERTS_SERVICE, tmp_path / f"alerts-{run}.log")


def temperature(metrics: metrics_pb2_grpc.MetricsServiceStub, token: str, room: str, value: float) -> None:
    batch = metrics_pb2.MetricBatch(sequence=1)
    batch.series.add(
        labels=[
            metrics_pb2.Label(name="__name__", value="temperature_celsius"),
            metrics_pb2.Label(name="room", value=room),
        ],
        timestamps_ms=[int(time.time() * 1000)],
        values=[value],
    )
    (ack,) = metrics.StreamMetrics(iter([batch]), metadata=(("authorization", f"Bearer {token}"),), timeout=10)
    assert ack.samples_accepted == 1


def alerts_now(stub: alerts_pb2_grpc.AlertServiceStub, **request: Any) -> list[alerts_pb2.Alert]:
    return list(stub.ListAlerts(alerts_pb2.ListAlertsRequest(**request), timeout=5).alerts)


def test_alerts_fire_resolve_survive_a_kill_respect_silences_and_keep_rules_on_a_bad_reload(
    alerts_env: dict[str, str], agents_process, metrics_process, receiver: Receiver, tmp_path: Path
):
    alerts_process, alerts_address = start_alerts(alerts_env, tmp_path)
    agents = agents_pb2_grpc.AgentServiceStub(grpc.insecure_channel(agents_process[1]))
    metrics = metrics_pb2_grpc.MetricsServiceStub(grpc.insecure_channel(metrics_process[1]))
    alerts = alerts_pb2_grpc.AlertServiceStub(grpc.insecure_channel(alerts_address))
    enroll = (("authorization", f"Bearer {ENROLLMENT_TOKEN}"),)
    sensor = agents.RegisterAgent(agents_pb2.RegisterAgentRequest(hostname="sensor"), metadata=enroll, timeout=5)

    def keep_alive() -> None:
        beat = agents_pb2.HeartbeatRequest(agent_id=sensor.agent_id)
        agents.Heartbeat(beat, metadata=(("authorization", f"Bearer {sensor.agent_token}"),), timeout=5)

    # The sensor host heartbeats all along (STALE comes after 2 s here, less than a restart of
    # the alerts process under load takes), so only the threshold rule is in play.
    done = threading.Event()

    def heartbeating() -> None:
        while not done.wait(0.3):
            with contextlib.suppress(grpc.RpcError):
                keep_alive()

    threading.Thread(target=heartbeating, daemon=True).start()
    try:
        # 1. Crossing the threshold: pending, then firing after `for`, notified once; dropping resolves it.
        keep_alive()
        temperature(metrics, sensor.agent_token, "lab", 80.0)
        wait_for(lambda: any(a.state == alerts_pb2.ALERT_STATE_PENDING for a in alerts_now(alerts)), what="pending")
        wait_for(lambda: receiver.about("TooHot", "firing"), what="the firing notification")
        (fired,) = receiver.about("TooHot", "firing")
        assert fired["labels"] == {"alertname": "TooHot", "host": "sensor", "room": "lab", "severity": "critical"}
        assert fired["annotations"] == {"summary": "lab is at 80 C"}
        (firing,) = alerts_now(alerts)
        assert firing.state == alerts_pb2.ALERT_STATE_FIRING

        # 2. SIGKILL while firing, restart: still firing since the same moment, nothing sent again.
        alerts_process.process.send_signal(signal.SIGKILL)
        alerts_process.process.wait(10)
        keep_alive()
        temperature(metrics, sensor.agent_token, "lab", 81.0)
        alerts_process, alerts_address = start_alerts(alerts_env, tmp_path, run=1)
        alerts = alerts_pb2_grpc.AlertServiceStub(grpc.insecure_channel(alerts_address))
        (after,) = alerts_now(alerts)
        assert after.state == alerts_pb2.ALERT_STATE_FIRING and after.fired_at == firing.fired_at
        time.sleep(2.5)  # more than group_interval: a forgotten notification state would resend now
        assert len(receiver.about("TooHot", "firing")) == 1

        keep_alive()
        temperature(metrics, sensor.agent_token, "lab", 20.0)
        wait_for(lambda: receiver.about("TooHot", "resolved"), what="the resolved notification")
        (resolved,) = receiver.about("TooHot", "resolved")
        assert resolved["endsAt"] != "0001-01-01T00:00:00Z"

        # 3. A silence: the alert shows as firing, silenced, and is not sent.
        silence = alerts.CreateSilence(
            alerts_pb2.CreateSilenceRequest(
                matchers=[alerts_pb2.Matcher(name="room", value="server-room")],
                ends_at=to_timestamp(int(time.time() * 1000) + 3_600_000),
                author="e2e",
                comment="the AC is being replaced",
            ),
            metadata=OPERATOR,
            timeout=5,
        ).silence
        keep_alive()
        temperature(metrics, sensor.agent_token, "server-room", 90.0)
        wait_for(
            lambda: any(a.state == alerts_pb2.ALERT_STATE_FIRING and a.silenced_by for a in alerts_now(alerts)),
            what="a silenced firing alert",
        )
        time.sleep(1.5)
        assert not [a for a in receiver.about("TooHot") if a["labels"]["room"] == "server-room"]
        assert silence.id in alerts_now(alerts, matchers='{room="server-room"}')[0].silenced_by

        # 4. An invalid rules file: ReloadRules and SIGHUP both keep the running rules.
        rules_file = Path(alerts_env["INFRAWATCH_ALERT_RULES"])
        rules_file.write_text("groups:\n  - name: broken\n    rules:\n      - alert: Nope\n")
        with pytest.raises(grpc.RpcError) as refused:
            alerts.ReloadRules(alerts_pb2.ReloadRulesRequest(), metadata=OPERATOR, timeout=5)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"{rules_file}:4: group broken: rule Nope" in refused.value.details()
        alerts_process.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "rules reload refused" in alerts_process.log(), what="the SIGHUP reload to be refused")
        names = {rule.name for rule in alerts.ListRules(alerts_pb2.ListRulesRequest(), timeout=5).rules}
        assert names == {"TooHot", "HostDown"}
        check = grpcurl("-plaintext", alerts_address, f"{ALERTS_SERVICE}/ListRules")
        assert (check.returncode == 0 and '"lastEvaluation"' in check.stdout) or '"last_evaluation"' in check.stdout
    finally:
        done.set()
        alerts_process.terminate()


def test_stopping_the_real_agent_fires_the_host_down_rule(
    alerts_env: dict[str, str], agents_process, metrics_process, receiver: Receiver, tmp_path: Path
):
    alerts_process, _ = start_alerts(alerts_env, tmp_path)
    env = {
        **alerts_env,
        "INFRAWATCH_AGENT_AGENTS_ADDRESS": alerts_env["INFRAWATCH_AGENTS_ADDRESS"],
        "INFRAWATCH_AGENT_METRICS_ADDRESS": alerts_env["INFRAWATCH_METRICS_ADDRESS"],
        "INFRAWATCH_AGENT_HOSTNAME": "doomed-host",
        "INFRAWATCH_AGENT_STATE_DIR": str(tmp_path / "agent-state"),
        "INFRAWATCH_AGENT_INTERVAL": "500ms",
    }
    agent = ServiceProcess("agent", env, tmp_path / "agent.log")
    try:
        wait_for(lambda: "streaming metrics" in agent.log(), what=f"the agent streaming:\n{agent.log()}")
        assert not receiver.about("HostDown")
        agent.terminate()
        wait_for(lambda: receiver.about("HostDown", "firing"), what="the host-down notification")
        (down,) = receiver.about("HostDown", "firing")
        assert down["labels"]["host"] == "doomed-host" and down["labels"]["severity"] == "page"
    finally:
        agent.kill()
        alerts_process.terminate()


def test_the_gateway_relays_alerting_and_the_readme_recipes_work_verbatim(
    alerts_env: dict[str, str], agents_process, metrics_process, receiver: Receiver, tmp_path: Path
):
    alerts_process, alerts_address = start_alerts(alerts_env, tmp_path)
    gateway, gateway_address = start(
        "services.gateway", alerts_env, "INFRAWATCH_GATEWAY_PORT", "infrawatch.gateway.v1.OperatorService",
        tmp_path / "gateway.log",
    )  # fmt: skip
    try:
        sensor = agents_pb2_grpc.AgentServiceStub(grpc.insecure_channel(agents_process[1])).RegisterAgent(
            agents_pb2.RegisterAgentRequest(hostname="db-1"),
            metadata=(("authorization", f"Bearer {ENROLLMENT_TOKEN}"),),
            timeout=5,
        )
        metrics = metrics_pb2_grpc.MetricsServiceStub(grpc.insecure_channel(metrics_process[1]))
        temperature(metrics, sensor.agent_token, "lab", 99.0)
        wait_for(lambda: receiver.about("TooHot", "firing"), what="the firing notification")
        addresses = {"localhost:50050": gateway_address, "localhost:50053": alerts_address}
        result = run_readme_recipe("alerts", addresses, tmp_path)
        assert result.returncode == 0, result.stderr
        assert '"rule": "TooHot"' in result.stdout and '"state": "ALERT_STATE_FIRING"' in result.stdout
        assert '"name": "HostDown"' in result.stdout and '"status": "expired"' in result.stdout
        assert '"rules": 2' in result.stdout
        overview = json.loads(
            grpcurl("-plaintext", gateway_address, "infrawatch.gateway.v1.OperatorService/GetFleetOverview").stdout
        )
        assert overview["alerts"] == "AVAILABILITY_AVAILABLE"
        assert "TooHot" in {a["rule"] for a in overview["firing_alerts"]}  # and HostDown: db-1 sends no heartbeats
        host = grpcurl(
            "-plaintext", "-d", '{"agent": {"hostname": "db-1"}}', gateway_address,
            "infrawatch.gateway.v1.OperatorService/GetAgent",
        )  # fmt: skip
        firing_here = {a["rule"] for a in json.loads(host.stdout)["agent"]["firing_alerts"]}
        assert "TooHot" in firing_here
        alerts_process.terminate()  # the gateway still answers, saying alerts are unavailable
        degraded = json.loads(
            grpcurl("-plaintext", gateway_address, "infrawatch.gateway.v1.OperatorService/GetFleetOverview").stdout
        )
        assert degraded["alerts"] == "AVAILABILITY_UNAVAILABLE" and degraded["counts"]
    finally:
        gateway.terminate()
        alerts_process.terminate()


def test_check_names_every_problem_and_exits_non_zero(tmp_path: Path):
    import subprocess
    import sys

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(RULES.replace("{port}", "9"))
    bad.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        metric: up\n        op: '>'\n")
    ran = subprocess.run(
        [sys.executable, "-m", "services.alerts", "check", str(good), str(bad)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert ran.returncode == 1
    assert f"{good}: OK: 1 groups, 2 rules, 1 routes" in ran.stdout
    assert f"{bad}:4: group g: rule A: threshold: is required" in ran.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "services.alerts"],
        env={**__import__("os").environ, "INFRAWATCH_ALERT_RULES": str(bad), "INFRAWATCH_SERVICE_TOKEN": "x"},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "is invalid; not starting" in refused.stderr
