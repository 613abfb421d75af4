"""The alerts context's rules: the rules file, the alert life cycle, grouping and the webhook body."""

from __future__ import annotations

import pytest

from services.alerts import notify
from services.alerts.domain import Alert, Found, Silence, State, advance, fingerprint, validate_silence
from services.alerts.rules import RulesError, load_rules
from services.alerts.templates import Context, render
from services.common.errors import InvalidArgument
from services.common.selectors import Matcher, MatchType

RULES = """
groups:
  - name: hosts
    interval: 10s
    rules:
      - alert: HighCpu
        metric: cpu_usage_percent
        aggregation: avg
        window: 1m
        group_by: [host]
        op: ">"
        threshold: 90
        for: 2m
        labels: {severity: warning}
        annotations: {summary: "{{ $labels.host }} at {{ $value }}%"}
      - alert: HostDown
        liveness: [stale, offline]
notifications:
  receivers:
    - name: oncall
      webhook_url: http://127.0.0.1:9/hook
  routes:
    - receiver: oncall
      matchers: '{severity=~"warning|critical"}'
      group_by: [alertname]
      group_wait: 10s
      group_interval: 1m
      repeat_interval: 1h
"""


@pytest.fixture
def rules():
    return load_rules(RULES, "rules.yaml")


def test_a_valid_file_gives_groups_rules_and_routes(rules):
    (group,) = rules.groups
    assert (group.name, group.interval_s) == ("hosts", 10.0)
    cpu, down = group.rules
    assert cpu.condition.describe() == "avg(cpu_usage_percent) by (host) over 1m > 90"
    assert cpu.for_s == 120 and dict(cpu.labels) == {"severity": "warning"}
    assert down.kind == "liveness" and down.condition.statuses == ("stale", "offline")
    (route,) = rules.routes
    assert route.matches({"severity": "critical"}) and not route.matches({"severity": "info"})


def test_every_problem_is_reported_with_file_line_and_rule():
    text = """groups:
  - name: g
    interval: soon
    rules:
      - alert: bad-name
        metric: "cpu{"
        op: "=>"
        annotations: {summary: "{{ $foo }}"}
      - alert: Y
        liveness: [asleep]
        labels: {team: "{{ $value | humanise }}"}
notifications:
  receivers: [{name: r, webhook_url: "ftp://x"}]
  routes: [{receiver: nobody}]
"""
    with pytest.raises(RulesError) as raised:
        load_rules(text, "bad.yaml")
    problems = raised.value.problems
    expected = [
        "bad.yaml:3: group g: interval: 'soon' must be a duration",
        "bad.yaml:5: group g: rule bad-name: alert name 'bad-name'",
        "bad.yaml:6: group g: rule bad-name: metric: selector: missing '}'",
        "bad.yaml:7: group g: rule bad-name: op '=>' is not one of",
        "bad.yaml:5: group g: rule bad-name: threshold: is required",
        "bad.yaml:8: group g: rule bad-name: annotations.summary: template: undefined variable: $foo",
        "bad.yaml:10: group g: rule Y: liveness: 'asleep' is not one of",
        'bad.yaml:11: group g: rule Y: labels.team: template: function "humanise" not defined',
        "bad.yaml:13: receiver r: webhook_url must be an http:// or https:// URL",
        "bad.yaml:14: route to nobody: no receiver is named 'nobody'",
    ]
    for start in expected:
        assert any(problem.startswith(start) for problem in problems), (start, problems)


def test_yaml_that_does_not_parse_names_its_line():
    with pytest.raises(RulesError, match=r"x\.yaml:3: not valid YAML"):
        load_rules("groups:\n  - name: [\n", "x.yaml")


def test_a_metric_no_agent_has_sent_is_a_warning_not_an_error(rules):
    from services.alerts.rules import unknown_metrics

    assert unknown_metrics(rules, {"cpu_usage_percent"}) == []
    assert unknown_metrics(rules, set()) == [("HighCpu", "cpu_usage_percent")]


def test_templates_render_value_and_labels_as_prometheus_does():
    context = Context({"host": "db-1"}, 93.456789)
    assert render("{{ $labels.host }} at {{ $value }}%", context) == "db-1 at 93.456789%"
    assert render("{{ $labels.host }} at {{ $value | humanize }}%", context) == "db-1 at 93.46%"


def test_an_alert_is_pending_then_fires_after_for_then_resolves(rules):
    cpu = rules.groups[0].rules[0]
    hot = [Found({"host": "db-1"}, 95.0)]
    first = advance(cpu, {}, hot, now_ms=0)
    (alert,) = first.values()
    assert alert.state is State.PENDING and alert.labels == {
        "host": "db-1",
        "severity": "warning",
        "alertname": "HighCpu",
    }
    assert alert.annotations == {"summary": "db-1 at 95%"}
    assert next(iter(advance(cpu, first, hot, now_ms=119_999).values())).state is State.PENDING
    fired = advance(cpu, first, hot, now_ms=120_000)
    assert next(iter(fired.values())).state is State.FIRING
    resolved = advance(cpu, fired, [], now_ms=130_000)
    assert next(iter(resolved.values())).state is State.RESOLVED
    assert advance(cpu, resolved, [], now_ms=130_000 + 16 * 60_000) == {}  # kept 15 minutes


def test_a_pending_alert_whose_condition_stops_holding_is_dropped_without_firing(rules):
    cpu = rules.groups[0].rules[0]
    pending = advance(cpu, {}, [Found({"host": "db-1"}, 95.0)], now_ms=0)
    assert advance(cpu, pending, [], now_ms=10_000) == {}


def test_fingerprints_are_stable_and_depend_on_every_label():
    assert fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"})
    assert fingerprint({"a": "1"}) != fingerprint({"a": "2"})


def _firing(host: str, at: int = 0) -> Alert:
    labels = {"alertname": "HighCpu", "host": host, "severity": "warning"}
    return Alert(fingerprint(labels), "HighCpu", State.FIRING, labels, {}, 95.0, at, fired_at_ms=at)


def test_groups_wait_then_send_changes_at_group_interval_and_repeat_at_repeat_interval(rules):
    routes = rules.routes
    a, b = _firing("a"), _firing("b")
    due, groups = notify.plan([a], set(), routes, {}, now_ms=0)
    assert due == []  # group_wait
    due, groups = notify.plan([a, b], set(), routes, groups, now_ms=10_000)
    (delivery,) = due
    assert [x.fingerprint for x in delivery.alerts] == sorted([a.fingerprint, b.fingerprint])
    groups[delivery.group.group_key] = notify.delivered(delivery, 10_000)
    assert notify.plan([a, b], set(), routes, groups, now_ms=20_000)[0] == []  # nothing changed
    resolved_b = Alert(b.fingerprint, b.rule, State.RESOLVED, b.labels, {}, 95.0, 0, 0, resolved_at_ms=25_000)
    assert notify.plan([a, resolved_b], set(), routes, groups, now_ms=60_000)[0] == []  # group_interval
    (change,) = notify.plan([a, resolved_b], set(), routes, groups, now_ms=70_000)[0]
    body = notify.webhook_body(change)
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "oncall"
    assert {x["fingerprint"]: x["status"] for x in body["alerts"]} == {
        a.fingerprint: "firing",
        b.fingerprint: "resolved",
    }
    assert body["alerts"][0]["endsAt"] in ("0001-01-01T00:00:00Z", "1970-01-01T00:00:25.000Z")
    groups[change.group.group_key] = notify.delivered(change, 70_000)
    assert notify.plan([a, resolved_b], set(), routes, groups, now_ms=70_000 + 3_599_000)[0] == []
    (repeat,) = notify.plan([a, resolved_b], set(), routes, groups, now_ms=70_000 + 3_600_000)[0]
    assert [x.fingerprint for x in repeat.alerts] == [a.fingerprint]  # the resolved one was told once


def test_silenced_alerts_are_not_sent_and_failed_deliveries_back_off(rules):
    a = _firing("a")
    assert notify.plan([a], {a.fingerprint}, rules.routes, {}, now_ms=0) == ([], {})
    _, groups = notify.plan([a], set(), rules.routes, {}, now_ms=0)
    (delivery,) = notify.plan([a], set(), rules.routes, groups, now_ms=10_000)[0]
    retry = notify.failed(delivery, 10_000)
    assert retry.failures == 1 and retry.next_attempt_ms == 11_000
    groups[retry.group_key] = retry
    assert notify.plan([a], set(), rules.routes, groups, now_ms=10_500)[0] == []
    assert len(notify.plan([a], set(), rules.routes, groups, now_ms=11_000)[0]) == 1


def test_a_silence_matches_while_active_and_must_name_a_label():
    silence = Silence("s1", (Matcher("host", MatchType.EQUAL, "db-1"),), 100, 200, "ana", "maintenance", 0)
    assert silence.silences({"host": "db-1"}, 150) and not silence.silences({"host": "db-1"}, 200)
    assert silence.status(50) == "pending" and silence.status(250) == "expired"
    validate_silence(silence)
    for broken, message in (
        (Silence("s", (), 1, 2, "a", "c", 0), "at least one matcher"),
        (Silence("s", (Matcher("host", MatchType.REGEX, ".*"),), 1, 2, "a", "c", 0), "match every alert"),
        (Silence("s", silence.matchers, 2, 1, "a", "c", 0), "ends_at must be after"),
        (Silence("s", silence.matchers, 1, 2, " ", "c", 0), "author is required"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            validate_silence(broken)


class _Store:
    def __init__(self) -> None:
        self.saved: dict[str, list[Alert]] = {}

    def load_alerts(self) -> list[Alert]:
        return [a for alerts in self.saved.values() for a in alerts]

    def replace_alerts(self, rule: str, alerts: list[Alert]) -> None:
        self.saved[rule] = alerts

    def drop_rules_except(self, rules: set[str]) -> None:
        self.saved = {k: v for k, v in self.saved.items() if k in rules}


class _Metrics:
    def __init__(self) -> None:
        self.found: list[Found] | Exception = []

    def metric_names(self) -> set[str]:
        return {"cpu_usage_percent"}

    def evaluate(self, condition, now_ms):
        if isinstance(self.found, Exception):
            raise self.found
        return self.found


def test_a_failed_evaluation_keeps_alerts_as_they_were_and_shows_on_the_rule(rules):
    from concurrent.futures import ThreadPoolExecutor

    from services.alerts.engine import AlertEngine
    from services.alerts.watch import AlertHub
    from services.common.errors import Unavailable

    clock = iter(range(0, 10**9, 200_000))
    store, metrics = _Store(), _Metrics()
    engine = AlertEngine(store, metrics, metrics, AlertHub(), lambda: next(clock), ThreadPoolExecutor(1))
    engine.start_with(rules)
    cpu = rules.groups[0].rules[0]
    metrics.found = [Found({"host": "db-1"}, 95.0)]
    engine.evaluate(cpu)
    engine.evaluate(cpu)
    (firing,) = engine.alerts()
    assert firing.state is State.FIRING and store.saved["HighCpu"] == [firing]
    metrics.found = Unavailable("metrics service: UNAVAILABLE")
    engine.evaluate(cpu)
    assert engine.alerts() == [firing]  # not resolved by an evaluation that could not see
    assert engine.health("HighCpu").error == "metrics service: UNAVAILABLE"
    metrics.found = []
    engine.evaluate(cpu)
    assert engine.alerts()[0].state is State.RESOLVED and engine.health("HighCpu").error == ""


TREE = """
groups: [{name: g, rules: [{alert: A, expr: vector(1)}]}]
notifications:
  receivers:
    - {name: default, webhook_url: "http://127.0.0.1:9/default"}
    - {name: db, webhook_url: "http://127.0.0.1:9/db"}
    - {name: audit, webhook_url: "http://127.0.0.1:9/audit"}
    - {name: pager, webhook_url: "http://127.0.0.1:9/pager"}
  route:
    receiver: default
    group_by: [alertname]
    group_wait: 10s
    routes:
      - matchers: ['team="db"']
        receiver: db
        group_by: [alertname, host]
        routes:
          - matchers: ['severity="critical"']
            receiver: pager
            repeat_interval: 5m
      - matchers: ['env=~"prod|staging"']
        receiver: audit
        continue: true
      - matchers: ['env="prod"']
        receiver: db
"""


def test_the_routing_tree_routes_as_alertmanager_does():
    from services.alerts.rules import routes_for

    (root,) = load_rules(TREE, "tree.yml").routes
    to = lambda **labels: [(r.receiver, r.path) for r in routes_for((root,), labels)]  # noqa: E731
    assert to(alertname="A") == [("default", "r")]  # no child matches: the root takes it
    assert to(team="db") == [("db", "r.0")]
    assert to(team="db", severity="critical") == [("pager", "r.0.0")]  # the deepest match
    assert to(env="prod") == [("audit", "r.1"), ("db", "r.2")]  # `continue` goes on to the next sibling
    assert to(env="staging") == [("audit", "r.1")]
    assert to(team="db", env="prod") == [("db", "r.0")]  # the first match without continue stops
    pager = root.routes[0].routes[0]
    assert (pager.group_by, pager.group_wait_s, pager.repeat_interval_s) == (("alertname", "host"), 10.0, 300.0)


def test_two_routes_to_one_receiver_keep_their_groups_apart():
    (root,) = load_rules(TREE, "tree.yml").routes
    alert = Alert("f1", "A", State.FIRING, {"alertname": "A", "env": "prod", "team": "x"}, {}, 1.0, 0, 0)
    _, kept = notify.plan([alert], set(), (root,), {}, now_ms=60_000)
    assert sorted(group.receiver for group in kept.values()) == ["audit", "db"]
    assert len({key for key in kept}) == 2
