"""Prometheus' rule format in the alerts context, on fakes: the file, the templates, the engine
(recording rules, ALERTS, liveness series, keep_firing_for, removed rules) and the Alertmanager
notifier's sending rules."""

from __future__ import annotations

import math
import struct
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry

from services.alerts import templates
from services.alerts.alertmanager import (
    AlertingConfig,
    AlertmanagerNotifier,
    NotificationTelemetry,
    load_alerting_config,
)
from services.alerts.domain import Found, State
from services.alerts.engine import STALE_NAN, AlertEngine, waves
from services.alerts.http_post import PostFailed
from services.alerts.ports import AgentLiveness, WrittenSeries
from services.alerts.rules import PromQLCondition, RulesError, load_rules
from services.alerts.templates import Context, Sample, render
from services.alerts.watch import AlertHub
from services.common.errors import InvalidArgument, Unavailable
from services.common.timestamps import rfc3339 as notify_time

RULES = """
groups:
  - name: rooms
    interval: 15s
    limit: 0
    rules:
      - record: room:temperature:max
        expr: max by (room) (temperature)
        labels: {source: rules}
      - alert: TooHot
        expr: room:temperature:max > 50
        for: 1m
        keep_firing_for: 2m
        labels: {severity: "{{ if gt $value 80.0 }}page{{ else }}ticket{{ end }}"}
        annotations:
          summary: "{{ $labels.room }} at {{ $value | humanize }}"
          peers: "{{ range query \\"room:temperature:max\\" }}{{ .Labels.room }} {{ end }}"
      - alert: TooHot
        expr: vector(1)
  - name: hosts
    rules:
      - alert: HostDown
        expr: infrawatch_agent_heartbeat_age_seconds and on (host) (infrawatch_agent_up == 0)
"""


class FakeMetrics:
    """The metrics service as the engine sees it: answers by expression, records every write."""

    def __init__(self) -> None:
        self.answers: dict[str, list[Found] | Exception] = {}
        self.writes: list[tuple[int, list[WrittenSeries]]] = []
        self.asked: list[str] = []
        self.fail_writes: Exception | None = None

    def metric_names(self) -> set[str]:
        return set()

    def instant_query(self, expr: str, at_ms: int) -> list[Found]:
        self.asked.append(expr)
        answer = self.answers.get(expr, [])
        if isinstance(answer, Exception):
            raise answer
        return answer

    def instant_queries(self, exprs: list[str], at_ms: int) -> list:
        answers = []
        for expr in exprs:
            try:
                answers.append(self.instant_query(expr, at_ms))
            except (InvalidArgument, Unavailable) as exc:
                answers.append(exc)
        return answers

    def evaluate(self, condition, now_ms):
        return []

    def write(self, series: list[WrittenSeries], at_ms: int) -> None:
        if self.fail_writes is not None:
            raise self.fail_writes
        self.writes.append((at_ms, series))
        # What the recording rule wrote is what later rules read.
        recorded = [s for s in series if s.labels["__name__"] == "room:temperature:max" and not math.isnan(s.value)]
        if recorded:
            self.answers["room:temperature:max > 50"] = [
                Found({k: v for k, v in s.labels.items() if k != "__name__"}, s.value) for s in recorded if s.value > 50
            ]
            self.answers["room:temperature:max"] = [Found(dict(s.labels), s.value) for s in recorded]

    def written(self, name: str) -> list[WrittenSeries]:
        return [s for _, batch in self.writes for s in batch if s.labels["__name__"] == name]


class FakeAgents:
    def __init__(self) -> None:
        self.agents: list[AgentLiveness] | Exception = []

    def evaluate(self, condition, now_ms):
        return []

    def liveness(self) -> list[AgentLiveness]:
        if isinstance(self.agents, Exception):
            raise self.agents
        return self.agents


class FakeStore:
    def __init__(self) -> None:
        self.saved: dict[str, list] = {}

    def load_alerts(self):
        return [a for alerts in self.saved.values() for a in alerts]

    def replace_alerts(self, rule, alerts):
        self.saved[rule] = alerts

    def drop_rules_except(self, rules):
        self.saved = {k: v for k, v in self.saved.items() if k in rules}


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def rules():
    return load_rules(RULES, "rules.yml")


@pytest.fixture
def world(rules):
    metrics, agents, store, clock = FakeMetrics(), FakeAgents(), FakeStore(), Clock()
    engine = AlertEngine(
        store, metrics, agents, AlertHub(), clock, ThreadPoolExecutor(4), external_labels={"site": "eu"}
    )
    engine.start_with(rules)
    return engine, metrics, agents, store, clock


def test_a_prometheus_file_gives_alerting_and_recording_rules_with_distinct_keys(rules):
    rooms, hosts = rules.groups
    record, hot, hot_again = rooms.rules
    assert (
        record.record and record.kind == "record" and record.condition == PromQLCondition("max by (room) (temperature)")
    )
    assert (hot.for_s, hot.keep_firing_for_s, hot.kind) == (60.0, 120.0, "alert")
    assert hot.key != hot_again.key and {hot.name, hot_again.name} == {"TooHot"}
    assert hosts.interval_s == 30.0 and hosts.rules[0].key == "HostDown"


def test_every_problem_of_a_prometheus_file_is_named_with_its_line():
    text = """groups:
  - name: g
    rules:
      - record: "not a metric"
        expr: "rate(x[5m]"
        for: 1m
      - alert: A
        expr: up == 0
        annotations: {summary: "{{ $value | humanise }}"}
      - alert: B
        record: b
        expr: up
      - alert: C
        expr: up
        metric: cpu
"""
    with pytest.raises(RulesError) as raised:
        load_rules(text, "bad.yml")
    problems = "\n".join(raised.value.problems)
    assert "bad.yml:4: group g: recording rule not a metric: 'not a metric' is not a valid metric name" in problems
    assert "bad.yml:5: group g: recording rule not a metric: expr: could not parse expression" in problems
    assert "bad.yml:6: group g: recording rule not a metric: a recording rule has no `for`" in problems
    assert 'bad.yml:9: group g: rule A: annotations.summary: template: function "humanise" not defined' in problems
    assert "bad.yml:10: group g: rule: give only one of `alert` and `record`" in problems
    assert "bad.yml:15: group g: rule: `metric` does not go with `expr`" in problems


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ $value | humanize }}", "1.235M"),
        ("{{ humanize1024 1048576 }}", "1Mi"),
        ("{{ humanizeDuration 90061 }}", "1d 1h 1m 1s"),
        ("{{ humanizeDuration 0.0123 }}", "12.3ms"),
        ("{{ humanizePercentage 0.256 }}", "25.6%"),
        ("{{ humanizeTimestamp 0 }}", "1970-01-01 00:00:00 +0000 UTC"),
        ('{{ printf "%.1f|%5s|%d|%q" $value "ab" 3 "x" }}', '1234567.0|   ab|3|"x"'),
        ("{{ $labels.instance | stripPort }} {{ toUpper $labels.job }}", "db-1 NODE"),
        ('{{ reReplaceAll "(.+)-(\\\\d+)" "$2" "db-17" }}', "17"),
        ('{{ if and (gt $value 1.0) (eq $labels.job "node") }}yes{{ else }}no{{ end }}', "yes"),
        ('{{ with query "up" }}{{ . | first | value }}{{ end }}', "1"),
        ('{{ range $i, $s := query "up" }}{{ $i }}:{{ label "instance" $s }} {{ end }}', "0:a 1:b "),
        ('{{ len (query "up") }} {{ (query "up" | first).Labels.instance }}', "2 a"),
        ("{{ $externalLabels.region }} {{ $externalURL }}", "eu http://iw"),
        ('{{- /* a comment */ -}}  x  {{- "y" -}}  ', "xy"),
        ("{{ .Labels.job }}={{ .Value }}", "node=1234567"),
        ("{{ $x := 2 }}{{ if true }}{{ $x = 3 }}{{ end }}{{ $x }}", "3"),
        ('{{ query "bad(" }}', "<error expanding template: query failed>"),
    ],
)
def test_templates_render_as_prometheus_renders_them(template: str, expected: str):
    def query(expr: str) -> list[Sample]:
        if expr == "bad(":
            raise templates.TemplateError("query failed")
        return [Sample({"instance": "a"}, 1.0), Sample({"instance": "b"}, 0.0)]

    context = Context({"instance": "db-1:9100", "job": "node"}, 1234567.0, {"region": "eu"}, "http://iw", query)
    assert render(template, context) == expected


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{ nope 1 }}", 'function "nope" not defined'),
        ("{{ $undeclared }}", "undefined variable: $undeclared"),
        ("{{ if true }}x", "missing {{ end }}"),
        ("{{ end }}", "unexpected {{ end }}"),
        ("{{ 1", "unclosed action"),
        ('{{ define "x" }}{{ end }}', "not supported"),
    ],
)
def test_a_template_that_cannot_parse_is_named(template: str, problem: str):
    assert problem in (templates.check(template) or "")


def test_recording_rules_write_before_the_rules_that_read_them(world, rules):
    engine, metrics, _, _, clock = world
    rooms = rules.groups[0]
    assert [len(wave) for wave in waves(rooms.rules)] == [1, 2]  # TooHot reads what is recorded first
    metrics.answers["max by (room) (temperature)"] = [Found({"room": "lab"}, 90.0), Found({"room": "hall"}, 20.0)]
    engine.evaluate_rules(rooms.rules)
    recorded = metrics.written("room:temperature:max")
    assert {s.labels["room"]: s.value for s in recorded} == {"lab": 90.0, "hall": 20.0}
    assert all(s.labels["source"] == "rules" for s in recorded)
    (pending,) = [a for a in engine.alerts() if a.labels.get("room") == "lab"]
    assert pending.state is State.PENDING
    assert pending.labels == {"alertname": "TooHot", "room": "lab", "source": "rules", "severity": "page"}
    assert pending.annotations == {"summary": "lab at 90", "peers": "lab hall "}
    (alerts_series,) = [s for s in metrics.written("ALERTS") if s.labels.get("room") == "lab"]
    assert alerts_series.labels["alertstate"] == "pending" and alerts_series.value == 1.0
    (for_state,) = [s for s in metrics.written("ALERTS_FOR_STATE") if s.labels.get("room") == "lab"]
    assert for_state.value == clock.ms / 1000


def test_keep_firing_for_holds_a_firing_alert_then_resolves_and_ends_its_series(world, rules):
    engine, metrics, _, _, clock = world
    rooms = rules.groups[0]
    metrics.answers["max by (room) (temperature)"] = [Found({"room": "lab"}, 60.0)]
    engine.evaluate_rules(rooms.rules)
    clock.ms += 60_000
    engine.evaluate_rules(rooms.rules)
    hot = lambda: next(a for a in engine.alerts() if a.labels.get("room") == "lab")  # noqa: E731
    assert hot().state is State.FIRING and hot().labels["severity"] == "ticket"
    metrics.answers["max by (room) (temperature)"] = [Found({"room": "lab"}, 10.0)]
    clock.ms += 60_000
    engine.evaluate_rules(rooms.rules)
    assert hot().state is State.FIRING and hot().keep_firing_since_ms == clock.ms  # held by keep_firing_for
    clock.ms += 120_000
    metrics.writes.clear()
    engine.evaluate_rules(rooms.rules)
    assert hot().state is State.RESOLVED
    stale = [s for s in metrics.written("ALERTS") if s.labels.get("room") == "lab"]
    assert len(stale) == 1 and math.isnan(stale[0].value)
    assert struct.pack("<d", stale[0].value) == struct.pack("<d", STALE_NAN)  # Prometheus' stale marker


def test_liveness_is_written_before_a_rule_reads_it_and_its_failure_holds_the_alerts(world, rules):
    engine, metrics, agents, _, clock = world
    hosts = rules.groups[1]
    expr = hosts.rules[0].condition.expr
    agents.agents = [
        AgentLiveness("web-1", {"role": "web"}, online=True, heartbeat_at_ms=clock.ms - 1_000),
        AgentLiveness("db-1", {}, online=False, heartbeat_at_ms=clock.ms - 90_000),
    ]
    metrics.answers[expr] = [Found({"__name__": "infrawatch_agent_heartbeat_age_seconds", "host": "db-1"}, 90.0)]
    engine.evaluate_rules(hosts.rules)
    up = {s.labels["host"]: s.value for s in metrics.written("infrawatch_agent_up")}
    age = {s.labels["host"]: s.value for s in metrics.written("infrawatch_agent_heartbeat_age_seconds")}
    assert up == {"web-1": 1.0, "db-1": 0.0} and age == {"web-1": 1.0, "db-1": 90.0}
    assert metrics.written("infrawatch_agent_up")[0].labels["role"] == "web"
    (down,) = engine.alerts()
    assert down.state is State.FIRING and down.labels == {"alertname": "HostDown", "host": "db-1"}
    agents.agents = Unavailable("agents service: UNAVAILABLE")
    clock.ms += 15_000
    engine.evaluate_rules(hosts.rules)
    assert engine.alerts() == [down]  # not resolved by an evaluation that could not see
    assert "agents service" in engine.health("HostDown").error


def test_a_bad_expression_or_duplicate_labels_fail_the_rule_not_the_engine(world, rules):
    engine, metrics, _, _, _ = world
    hot_again = rules.groups[0].rules[2]
    metrics.answers["vector(1)"] = InvalidArgument("bad expression")
    engine.evaluate(hot_again)
    assert engine.health(hot_again.key).error == "bad expression"
    metrics.answers["vector(1)"] = [Found({"a": "1", "__name__": "x"}, 1.0), Found({"a": "1", "__name__": "y"}, 1.0)]
    engine.evaluate(hot_again)
    assert "two samples with the labels" in engine.health(hot_again.key).error


def test_a_removed_rule_resolves_its_firing_alerts(world, rules):
    engine, metrics, _, store, clock = world
    hot_again = rules.groups[0].rules[2]
    metrics.answers["vector(1)"] = [Found({}, 1.0)]
    engine.evaluate(hot_again)
    (firing,) = engine.alerts()
    assert firing.state is State.FIRING
    clock.ms += 1_000
    engine.use(load_rules("groups: [{name: g, rules: [{alert: Other, expr: vector(0) > 1}]}]", "new.yml"))
    (resolved,) = engine.alerts()
    assert resolved.state is State.RESOLVED and resolved.resolved_at_ms == clock.ms
    assert store.saved[hot_again.key] == [resolved]


def test_failed_writes_of_a_recording_rule_show_on_it(world, rules):
    engine, metrics, _, _, _ = world
    metrics.answers["max by (room) (temperature)"] = [Found({"room": "lab"}, 1.0)]
    metrics.fail_writes = Unavailable("metrics service: UNAVAILABLE")
    record = rules.groups[0].rules[0]
    engine.evaluate(record)
    assert "UNAVAILABLE" in engine.health(record.key).error


def test_the_alerting_configuration_reads_prometheus_shape_and_names_problems():
    config = load_alerting_config(
        """
global:
  external_labels: {region: eu}
alerting:
  alertmanagers:
    - static_configs: [{targets: ["am-1:9093", "am-2:9093"]}]
      path_prefix: /am
      scheme: https
      timeout: 3s
""",
        "prometheus.yml",
    )
    assert config.external_labels == {"region": "eu"}
    assert [t.url for t in config.alertmanagers] == [
        "https://am-1:9093/am/api/v2/alerts",
        "https://am-2:9093/am/api/v2/alerts",
    ]
    assert config.alertmanagers[0].timeout_s == 3.0
    with pytest.raises(RulesError) as raised:
        load_alerting_config("alerting:\n  alertmanagers:\n    - api_version: v1\n      scheme: ftp\n", "p.yml")
    problems = "\n".join(raised.value.problems)
    assert "p.yml:4: alerting: alertmanagers: scheme 'ftp' is not http or https" in problems
    assert "only api_version v2" in problems and "needs `static_configs:`" in problems


class Poster:
    def __init__(self) -> None:
        self.posts: list[tuple[str, list[dict]]] = []
        self.error: Exception | None = None

    def __call__(self, url: str, body: object, timeout_s: float) -> None:
        self.posts.append((url, body))  # type: ignore[arg-type]
        if self.error is not None:
            raise self.error


class InlinePool:
    def submit(self, fn, *args):
        fn(*args)


def test_alertmanager_gets_firing_alerts_at_once_then_every_resend_and_never_pending(world, rules):
    engine, metrics, _, _, clock = world
    poster = Poster()
    notifier = AlertmanagerNotifier(
        engine.alerts,
        engine.expression_of,
        AlertingConfig(
            {"site": "eu"},
            load_alerting_config(
                "alerting: {alertmanagers: [{static_configs: [{targets: ['am:9093']}]}]}", "p.yml"
            ).alertmanagers,
        ),
        clock,
        InlinePool(),  # type: ignore[arg-type]
        NotificationTelemetry(CollectorRegistry()),
        external_url="http://iw:8080",
        resend_delay_s=60,
        post=poster,
    )
    rooms = rules.groups[0]
    metrics.answers["max by (room) (temperature)"] = [Found({"room": "lab"}, 60.0)]
    engine.evaluate_rules(rooms.rules)
    notifier.tick()
    assert poster.posts == []  # pending is never sent
    clock.ms += 60_000
    engine.evaluate_rules(rooms.rules)
    notifier.tick()
    ((url, body),) = poster.posts
    assert url == "http://am:9093/api/v2/alerts"
    (sent,) = body
    assert sent["labels"] == {
        "alertname": "TooHot",
        "room": "lab",
        "source": "rules",
        "severity": "ticket",
        "site": "eu",
    }
    assert sent["generatorURL"] == "http://iw:8080/explore?query=room%3Atemperature%3Amax%20%3E%2050"
    assert sent["endsAt"] > sent["startsAt"]
    clock.ms += 30_000
    notifier.tick()
    assert len(poster.posts) == 1  # within the resend delay
    clock.ms += 30_000
    notifier.tick()
    assert len(poster.posts) == 2  # resent
    poster.error = PostFailed("HTTP 400: bad alerts", 400)
    clock.ms += 60_000
    notifier.tick()
    notifier.tick()
    assert len(poster.posts) == 3  # a 4xx waits for the next resend, not the next tick
    poster.error = OSError("connection refused")
    clock.ms += 60_000
    notifier.tick()
    notifier.tick()
    assert len(poster.posts) == 4  # backing off
    clock.ms += 1_000
    poster.error = None
    notifier.tick()
    assert len(poster.posts) == 5  # retried after the backoff
    metrics.answers["max by (room) (temperature)"] = [Found({"room": "lab"}, 10.0)]
    engine.evaluate_rules(rooms.rules)  # held firing by keep_firing_for (2m)
    clock.ms += 120_000
    engine.evaluate_rules(rooms.rules)
    notifier.tick()
    assert len(poster.posts) == 6  # resolved: sent at once, whatever the resend delay
    (resolved,) = poster.posts[-1][1]
    assert resolved["endsAt"] == notify_time(clock.ms)


def test_notification_telemetry_counts_by_integration_receiver_and_reason():
    from prometheus_client import generate_latest

    registry = CollectorRegistry()
    telemetry = NotificationTelemetry(registry)
    telemetry.observe("alertmanager", "http://am:9093/api/v2/alerts", 0.0, None)
    telemetry.observe("webhook", "oncall", 0.0, PostFailed("HTTP 400", 400))
    telemetry.observe("webhook", "oncall", 0.0, TimeoutError("no answer"))
    telemetry.observe("webhook", "oncall", 0.0, PostFailed("HTTP 503", 503))
    text = generate_latest(registry).decode()
    assert 'infrawatch_notifications_total{integration="webhook",receiver="oncall"} 3.0' in text
    for reason in ("refused", "timeout", "error"):
        assert (
            f'infrawatch_notifications_failed_total{{integration="webhook",reason="{reason}",receiver="oncall"}} 1.0'
            in text
        )
    assert 'infrawatch_notification_latency_seconds_count{integration="alertmanager"' in text
