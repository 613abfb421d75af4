"""Bring your own Prometheus rules and keep your Alertmanager: a Prometheus rule file (checked by
Debian's `promtool`) evaluated by the real alerts process over the real metrics process, its
recording rule queryable by PromQL, its alert delivered to Debian's real `prometheus-alertmanager`,
which routes it to a webhook and holds a silence made there."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from infrawatch.agents.v1 import agents_pb2, agents_pb2_grpc
from infrawatch.metrics.v1 import metrics_pb2, metrics_pb2_grpc
from tests.e2e.conftest import ENROLLMENT_TOKEN, binary
from tests.e2e.processes import free_port, wait_for
from tests.e2e.test_alerts_process import Receiver, start_alerts, temperature

RULES = """
groups:
  - name: rooms
    interval: 500ms
    rules:
      - record: room:temperature_celsius:max
        expr: max by (room) (temperature_celsius)
      - alert: TooHot
        expr: room:temperature_celsius:max > 50
        for: 0s
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.room }} is at {{ $value | humanize }} C"
          site: "{{ $externalLabels.site }}"
"""

ALERTING = """
global:
  external_labels:
    site: e2e
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:{port}"]
      timeout: 5s
"""

ALERTMANAGER = """
route:
  receiver: hook
  group_by: [alertname, room]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:{port}/hook
        send_resolved: true
"""


class Alertmanager:
    def __init__(self, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.port = port
        self.process = process
        self.log = log

    def api(self, path: str, body: object | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v2/{path}",
            data=data,
            headers={"Content-Type": "application/json"},
            method="POST" if data is not None else "GET",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def alerts(self, alertname: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts") if a["labels"].get("alertname") == alertname]


@pytest.fixture
def hook() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture
def alertmanager(tmp_path: Path, hook: Receiver) -> Iterator[Alertmanager]:
    executable = binary("prometheus-alertmanager")
    config = tmp_path / "alertmanager.yml"
    config.write_text(ALERTMANAGER.replace("{port}", str(hook.port)))
    port = free_port()
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                executable,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    manager = Alertmanager(port, process, log)

    def ready() -> bool:
        try:
            manager.api("status")
            return True
        except OSError:
            return False

    wait_for(ready, timeout=30, what="Alertmanager answering")
    yield manager
    process.kill()
    process.wait(10)


@pytest.fixture
def e2e_database_url(postgres_schema_url: str) -> str:
    """PostgreSQL only: the production store; the embedded one is covered by the other alert tests."""
    return postgres_schema_url


def test_the_same_rule_file_passes_promtool_and_infrawatch_check(tmp_path: Path):
    promtool = binary("promtool")
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    default = Path("services/alerts/default_rules.yaml")
    for path in (rules, default):
        checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        ours = subprocess.run(
            [".venv/bin/python", "-m", "services.alerts", "check", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert ours.returncode == 0, ours.stderr
    # A mistake both of them see: an expression that does not parse.
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.replace("max by (room) (temperature_celsius)", "max by (room) (temperature_celsius"))
    theirs = subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True, text=True, check=False)
    ours = subprocess.run(
        [".venv/bin/python", "-m", "services.alerts", "check", str(broken)], capture_output=True, text=True, check=False
    )
    assert theirs.returncode != 0 and ours.returncode != 0
    assert f"{broken}:7: group rooms: recording rule room:temperature_celsius:max: expr: could not parse" in ours.stderr


def test_a_prometheus_rule_file_records_and_fires_to_a_real_alertmanager_that_routes_and_silences(
    platform_env: dict[str, str],
    agents_process,
    metrics_process,
    alertmanager: Alertmanager,
    hook: Receiver,
    tmp_path: Path,
):
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    alerting = tmp_path / "alerting.yml"
    alerting.write_text(ALERTING.replace("{port}", str(alertmanager.port)))
    env = {
        **platform_env,
        "INFRAWATCH_ALERT_RULES": str(rules),
        "INFRAWATCH_ALERTING_CONFIG": str(alerting),
        "INFRAWATCH_EXTERNAL_URL": "http://console.example:8080",
        "INFRAWATCH_ALERT_RESEND_DELAY": "2s",
    }
    alerts_process, _ = start_alerts(env, tmp_path)
    agents = agents_pb2_grpc.AgentServiceStub(grpc.insecure_channel(agents_process[1]))
    metrics = metrics_pb2_grpc.MetricsServiceStub(grpc.insecure_channel(metrics_process[1]))
    enroll = (("authorization", f"Bearer {ENROLLMENT_TOKEN}"),)
    sensor = agents.RegisterAgent(agents_pb2.RegisterAgentRequest(hostname="sensor"), metadata=enroll, timeout=5)

    def instant(query: str) -> list[metrics_pb2.InstantSample]:
        return list(metrics.InstantQuery(metrics_pb2.InstantQueryRequest(query=query), timeout=5).samples)

    try:
        # A silence made in Alertmanager before the alert exists, for one room only.
        now = time.time()
        alertmanager.api(
            "silences",
            {
                "matchers": [{"name": "room", "value": "vault", "isRegex": False, "isEqual": True}],
                "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
                "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
                "createdBy": "e2e",
                "comment": "the vault is always hot",
            },
        )
        temperature(metrics, sensor.agent_token, "lab", 80.0)
        temperature(metrics, sensor.agent_token, "vault", 90.0)

        # The recording rule's result is a series PromQL reads; the alert is an ALERTS series.
        wait_for(lambda: len(instant("room:temperature_celsius:max")) == 2, timeout=30, what="the recorded series")
        recorded = {
            {label.name: label.value for label in s.labels}["room"]: s.value
            for s in instant("room:temperature_celsius:max")
        }
        assert recorded == {"lab": 80.0, "vault": 90.0}
        wait_for(lambda: len(instant('ALERTS{alertname="TooHot", alertstate="firing"}')) == 2, what="ALERTS")

        # Alertmanager holds both, with InfraWatch's labels, external labels and links.
        wait_for(lambda: len(alertmanager.alerts("TooHot")) == 2, timeout=30, what="both alerts in Alertmanager")
        by_room = {a["labels"]["room"]: a for a in alertmanager.alerts("TooHot")}
        lab = by_room["lab"]
        assert lab["labels"] == {"alertname": "TooHot", "room": "lab", "severity": "critical", "site": "e2e"}
        assert lab["annotations"] == {"summary": "lab is at 80 C", "site": "e2e"}
        assert lab["generatorURL"].startswith("http://console.example:8080/explore?query=room%3Atemperature")
        assert lab["status"]["state"] == "active"
        assert by_room["vault"]["status"]["state"] == "suppressed"  # the silence made there holds

        # The Prometheus side answers Grafana's rules and alerts views from the alerts service.
        prom = f"http://127.0.0.1:{platform_env['INFRAWATCH_PROM_PORT']}/api/v1"
        with urllib.request.urlopen(f"{prom}/rules", timeout=5) as response:
            (group,) = json.loads(response.read())["data"]["groups"]
        recording, alerting = group["rules"]
        assert (group["name"], group["interval"]) == ("rooms", 0.5)
        assert (recording["type"], recording["name"], recording["health"]) == (
            "recording",
            "room:temperature_celsius:max",
            "ok",
        )
        assert (alerting["type"], alerting["state"], alerting["query"]) == (
            "alerting",
            "firing",
            "room:temperature_celsius:max > 50",
        )
        assert sorted(a["labels"]["room"] for a in alerting["alerts"]) == ["lab", "vault"]
        assert alerting["annotations"]["summary"] == "{{ $labels.room }} is at {{ $value | humanize }} C"
        with urllib.request.urlopen(f"{prom}/rules?type=record", timeout=5) as response:
            assert [r["type"] for r in json.loads(response.read())["data"]["groups"][0]["rules"]] == ["recording"]
        with urllib.request.urlopen(f"{prom}/alerts", timeout=5) as response:
            listed = json.loads(response.read())["data"]["alerts"]
        assert {(a["labels"]["room"], a["state"], a["value"]) for a in listed} == {
            ("lab", "firing", "8e+01"),
            ("vault", "firing", "9e+01"),
        }

        # Alertmanager routes the lab alert to its webhook; the silenced one never goes out.
        wait_for(lambda: hook.about("TooHot", "firing"), timeout=30, what="Alertmanager's notification")
        time.sleep(3)  # past a resend (2 s) and Alertmanager's group interval (1 s)
        rooms = {alert["labels"]["room"] for alert in hook.about("TooHot")}
        assert rooms == {"lab"}, hook.bodies

        # Cooling down resolves it in InfraWatch, then in Alertmanager, which says so to its webhook.
        temperature(metrics, sensor.agent_token, "lab", 20.0)
        wait_for(lambda: hook.about("TooHot", "resolved"), timeout=30, what="the resolved notification")
        wait_for(lambda: not instant('ALERTS{room="lab"}'), timeout=10, what="ALERTS ending with a stale marker")
    finally:
        alerts_process.kill()


def test_the_built_in_host_down_rule_ignores_our_own_restart_and_fires_when_the_real_agent_dies(
    platform_env: dict[str, str], tmp_path: Path
):
    """The built-in rules file (its group interval shortened) with the real agent: a platform
    restart longer than the offline threshold raises no HostDown; killing the agent does."""
    from tests.e2e.conftest import AGENTS_SERVICE, METRICS_SERVICE, start

    rules = tmp_path / "rules.yml"
    rules.write_text(Path("services/alerts/default_rules.yaml").read_text().replace("interval: 15s", "interval: 300ms"))
    # Heartbeats every 2 s: STALE after 4 s, OFFLINE after 6 s; the platform stays down 8 s.
    env = {**platform_env, "INFRAWATCH_ALERT_RULES": str(rules), "INFRAWATCH_HEARTBEAT_INTERVAL": "2s"}
    agent_env = {
        **env,
        "INFRAWATCH_AGENT_AGENTS_ADDRESS": env["INFRAWATCH_AGENTS_ADDRESS"],
        "INFRAWATCH_AGENT_METRICS_ADDRESS": env["INFRAWATCH_METRICS_ADDRESS"],
        "INFRAWATCH_AGENT_HOSTNAME": "steady-host",
        "INFRAWATCH_AGENT_STATE_DIR": str(tmp_path / "agent-state"),
        "INFRAWATCH_AGENT_INTERVAL": "500ms",
    }

    def platform(run: int) -> list:
        agents, _ = start(
            "services.agents", env, "INFRAWATCH_AGENTS_PORT", AGENTS_SERVICE, tmp_path / f"agents-{run}.log"
        )
        metrics, _ = start(
            "services.metrics", env, "INFRAWATCH_METRICS_PORT", METRICS_SERVICE, tmp_path / f"metrics-{run}.log"
        )
        alerts, address = start_alerts(env, tmp_path, run)
        return [agents, metrics, alerts, address]

    from infrawatch.alerts.v1 import alerts_pb2, alerts_pb2_grpc
    from tests.e2e.processes import ServiceProcess

    agents, metrics, alerts, address = platform(0)
    agent = ServiceProcess("agent", agent_env, tmp_path / "agent.log")
    seen: list[str] = []
    try:
        stub = alerts_pb2_grpc.AlertServiceStub(grpc.insecure_channel(address))

        def host_down() -> list:
            try:
                found = [
                    a for a in stub.ListAlerts(alerts_pb2.ListAlertsRequest(), timeout=5).alerts if a.rule == "HostDown"
                ]
            except grpc.RpcError:
                return []
            seen.extend(f"{a.labels['host']}:{a.state}" for a in found)
            return found

        wait_for(lambda: "streaming metrics" in agent.log(), what=f"the agent streaming:\n{agent.log()}")
        metrics_stub = metrics_pb2_grpc.MetricsServiceStub(grpc.insecure_channel(env["INFRAWATCH_METRICS_ADDRESS"]))
        wait_for(
            lambda: (
                metrics_stub.InstantQuery(
                    metrics_pb2.InstantQueryRequest(query='infrawatch_agent_up{host="steady-host"} == 1'), timeout=5
                ).samples
            ),
            what="the agent's liveness as a series",
        )
        assert not host_down()

        # The whole platform stops for longer than the offline threshold; the agent keeps running.
        for process in (alerts, metrics, agents):
            process.terminate()
        time.sleep(8)
        # Alerts and metrics come back first, then the agents service: every evaluation from
        # then on sees a heartbeat older than the offline threshold, yet none may call the host down.
        metrics_process, _ = start(
            "services.metrics", env, "INFRAWATCH_METRICS_PORT", METRICS_SERVICE, tmp_path / "metrics-1.log"
        )
        alerts, address = start_alerts(env, tmp_path, 1)
        metrics = metrics_process
        stub = alerts_pb2_grpc.AlertServiceStub(grpc.insecure_channel(address))
        agents, _ = start("services.agents", env, "INFRAWATCH_AGENTS_PORT", AGENTS_SERVICE, tmp_path / "agents-1.log")
        watch_until = time.monotonic() + 8  # past the stale threshold after the start
        while time.monotonic() < watch_until:
            assert not host_down(), seen
            time.sleep(0.1)
        assert "liveness resumes after a downtime" in agents.log()

        # A real death is still seen: the built-in rule fires with the heartbeat's age as its value.
        agent.kill()
        wait_for(lambda: any(a.state == alerts_pb2.ALERT_STATE_FIRING for a in host_down()), what="HostDown")
        (down,) = host_down()
        assert down.labels["host"] == "steady-host" and down.labels["severity"] == "critical"
        assert "stopped reporting" in down.annotations["summary"]
    finally:
        agent.kill()
        for process in (alerts, metrics, agents):
            process.kill()


TWO_VOICES = """
groups:
  - name: rooms
    interval: 300ms
    rules:
      - alert: TooHot
        expr: max by (room) (temperature_celsius) > 50
notifications:
  receivers: [{name: hook, webhook_url: "http://127.0.0.1:{port}/hook"}]
  routes: [{receiver: hook, group_by: [alertname, room], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}]
"""


def test_two_replicas_speak_with_one_voice_and_the_survivor_takes_over_a_killed_leader(
    platform_env: dict[str, str],
    agents_process,
    metrics_process,
    alertmanager: Alertmanager,
    hook: Receiver,
    tmp_path: Path,
):
    """Two alerts processes on one PostgreSQL: one evaluates and notifies; kill -9 of it while an
    alert fires gives exactly one firing notification at the webhook and through Alertmanager,
    and the other takes over within a second or two."""
    from infrawatch.alerts.v1 import alerts_pb2, alerts_pb2_grpc

    direct = Receiver()  # InfraWatch's own webhook notifier posts here; Alertmanager posts to `hook`
    rules = tmp_path / "rules.yml"
    rules.write_text(TWO_VOICES.replace("{port}", str(direct.port)))
    alerting = tmp_path / "alerting.yml"
    alerting.write_text(ALERTING.replace("{port}", str(alertmanager.port)))
    shared = {
        **platform_env,
        "INFRAWATCH_ALERT_RULES": str(rules),
        "INFRAWATCH_ALERTING_CONFIG": str(alerting),
        "INFRAWATCH_ALERT_RESEND_DELAY": "2s",
    }
    replicas = []
    for run in (0, 1):
        port = free_port()
        env = {**shared, "INFRAWATCH_ALERTS_PORT": str(port), "INFRAWATCH_ALERTS_TELEMETRY_PORT": str(free_port())}
        replicas.append(start_alerts(env, tmp_path, run))
    agents = agents_pb2_grpc.AgentServiceStub(grpc.insecure_channel(agents_process[1]))
    metrics = metrics_pb2_grpc.MetricsServiceStub(grpc.insecure_channel(metrics_process[1]))
    enroll = (("authorization", f"Bearer {ENROLLMENT_TOKEN}"),)
    sensor = agents.RegisterAgent(agents_pb2.RegisterAgentRequest(hostname="sensor"), metadata=enroll, timeout=5)
    leads = "this replica leads"
    try:
        wait_for(lambda: any(leads in process.log() for process, _ in replicas), what="a leader")
        (leader, _), (follower, follower_address) = sorted(replicas, key=lambda r: leads not in r[0].log())
        assert leads not in follower.log()

        temperature(metrics, sensor.agent_token, "lab", 80.0)
        wait_for(lambda: direct.about("TooHot", "firing"), timeout=30, what="the webhook's firing notification")
        wait_for(lambda: hook.about("TooHot", "firing"), timeout=30, what="Alertmanager's firing notification")
        # The follower shows the leader's alert too.
        follower_stub = alerts_pb2_grpc.AlertServiceStub(grpc.insecure_channel(follower_address))
        wait_for(
            lambda: (
                [a.labels["room"] for a in follower_stub.ListAlerts(alerts_pb2.ListAlertsRequest(), timeout=5).alerts]
                == ["lab"]
            ),
            what="the follower listing the leader's alert",
        )

        leader.kill()  # SIGKILL, while the alert fires
        wait_for(lambda: leads in follower.log(), timeout=10, what="the follower taking over")
        temperature(metrics, sensor.agent_token, "hall", 70.0)  # evaluated by the new leader alone
        wait_for(
            lambda: any(a["labels"]["room"] == "hall" for a in direct.about("TooHot", "firing")),
            timeout=15,
            what="the new leader's notification",
        )
        time.sleep(4)  # two resends to Alertmanager and several group intervals
        direct_lab = [a for a in direct.about("TooHot", "firing") if a["labels"]["room"] == "lab"]
        managed_lab = [a for a in hook.about("TooHot", "firing") if a["labels"]["room"] == "lab"]
        assert len(direct_lab) == 1, direct.bodies
        assert len(managed_lab) == 1, hook.bodies
    finally:
        direct.server.shutdown()
        for process, _ in replicas:
            process.kill()


def _readme_example(name: str) -> str:
    text = Path("README.md").read_text()
    marker = f"<!-- example:{name} -->\n```yaml\n"
    assert marker in text, f"README has no example:{name} block"
    return text.split(marker, 1)[1].split("```", 1)[0]


def test_the_readme_rule_file_passes_promtool_and_its_alerting_and_routing_examples_load(tmp_path: Path):
    from services.alerts.alertmanager import load_alerting_config
    from services.alerts.rules import load_rules

    rules = tmp_path / "readme-rules.yml"
    rules.write_text(_readme_example("rules"))
    checked = subprocess.run(
        [binary("promtool"), "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert len(load_rules(rules.read_text(), str(rules)).rules) == 3
    config = load_alerting_config(_readme_example("alerting"), "alerting.yml")
    assert [t.url for t in config.alertmanagers] == ["http://alertmanager.example.com:9093/api/v2/alerts"]
    text = Path("README.md").read_text()
    routing = text.split("```yaml\nnotifications:\n", 1)[1].split("```", 1)[0]
    (root,) = load_rules(_readme_example("rules") + "notifications:\n" + routing, "with-routes.yml").routes
    assert [r.receiver for r in root.routes] == ["audit", "oncall"] and root.routes[0].continue_matching
