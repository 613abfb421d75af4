"""Alerting and recording rules and notification routes: the YAML file, its validation and the
rule model.

A file is a Prometheus rule file (`groups:` of `name`, `interval`, `rules:`; each rule an
`alert` or a `record` with a PromQL `expr`, `for`, `keep_firing_for`, `labels`, `annotations` in
Prometheus' template language), so the same file passes `promtool check rules`. InfraWatch's
earlier forms stay readable: a rule with `metric`/`aggregation`/`threshold` or `liveness:`
instead of `expr`, and a `notifications:` section (receivers and routes; a file that has one is
no longer a file promtool accepts). Every problem is reported with the file, the line and the
rule, all at once, so an operator fixes a file in one pass (`python -m services.alerts check
FILE`, like `promtool check rules`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import promql_parser
import yaml

from agent.values import duration_seconds
from services.alerts import templates
from services.common.aggregations import BY_NAME
from services.common.errors import InvalidArgument
from services.common.labels import LABEL_NAME_RULE, is_label_name, is_metric_name
from services.common.selectors import Matcher, MatchType, parse_selector

AGGREGATIONS = tuple(BY_NAME)
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda value, threshold: value > threshold,
    ">=": lambda value, threshold: value >= threshold,
    "<": lambda value, threshold: value < threshold,
    "<=": lambda value, threshold: value <= threshold,
    "==": lambda value, threshold: value == threshold,
    "!=": lambda value, threshold: value != threshold,
}
LIVENESS_STATUSES = ("stale", "offline")


class RulesError(Exception):
    """A rules file that cannot be used; `problems` names file, line and rule for each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class MetricCondition:
    """`aggregation(selector) by (group_by) over window  op  threshold`."""

    selector: str
    matchers: tuple[Matcher, ...]
    aggregation: str
    window_s: float
    group_by: tuple[str, ...]
    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        return COMPARISONS[self.op](value, self.threshold)

    @property
    def query(self) -> tuple[object, ...]:
        """What is asked of the metrics service: rules that differ only in op and threshold share it."""
        return ("metric", self.selector, self.aggregation, self.window_s, self.group_by)

    def describe(self) -> str:
        by = f" by ({', '.join(self.group_by)})" if self.group_by else ""
        return f"{self.aggregation}({self.selector}){by} over {_duration(self.window_s)} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class LivenessCondition:
    """An agent whose status is one of `statuses` (stale, offline), optionally only agents with labels."""

    statuses: tuple[str, ...]
    agent_labels: tuple[tuple[str, str], ...] = ()

    def holds(self, value: float) -> bool:
        return True  # every agent found in one of the statuses

    @property
    def query(self) -> tuple[object, ...]:
        return ("liveness", self.statuses, self.agent_labels)

    def describe(self) -> str:
        only = " with " + ", ".join(f"{k}={v}" for k, v in self.agent_labels) if self.agent_labels else ""
        return f"agent status in ({', '.join(self.statuses)}){only}"


@dataclass(frozen=True)
class PromQLCondition:
    """A PromQL expression: every sample of its result is an alert (or a recorded sample)."""

    expr: str

    def holds(self, value: float) -> bool:
        return True  # the expression's own comparison filtered the result

    @property
    def query(self) -> tuple[object, ...]:
        return ("promql", self.expr)

    def describe(self) -> str:
        return self.expr


Condition = MetricCondition | LivenessCondition | PromQLCondition


@dataclass(frozen=True)
class Rule:
    name: str
    group: str
    condition: Condition
    for_s: float = 0.0
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    keep_firing_for_s: float = 0.0
    record: bool = False
    """A recording rule: its result is written as series named `name`, it raises no alert."""
    key: str = ""
    """The rule's identity in the file (its alerts are kept under it): the name, or, where
    several rules share a name (Prometheus allows it), the name with its group and position."""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.name)

    @property
    def kind(self) -> str:
        if self.record:
            return "record"
        if isinstance(self.condition, PromQLCondition):
            return "alert"
        return "metric" if isinstance(self.condition, MetricCondition) else "liveness"


@dataclass(frozen=True)
class RuleGroup:
    name: str
    interval_s: float
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Receiver:
    name: str
    webhook_url: str
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Route:
    """A node of the routing tree, as Alertmanager's: alerts whose labels match go down to the
    first child that matches (and on to later ones while a matching child says `continue`), or,
    when no child matches, to this route's `receiver`, batched per `group_by` label values.
    Children inherit the receiver, grouping and timings they do not set."""

    receiver: str
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] = ("alertname",)
    group_wait_s: float = 30.0
    group_interval_s: float = 300.0
    repeat_interval_s: float = 4 * 3600.0
    continue_matching: bool = False
    routes: tuple[Route, ...] = ()
    path: str = ""
    """Where the route sits in the tree ("" for a top-level route, "0.2" for a child's child);
    part of its groups' keys, so two routes to one receiver keep their groups apart."""

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels.get(m.name, "")) for m in self.matchers)

    def destinations(self, labels: dict[str, str]) -> list[Route]:
        """The routes that take an alert with `labels` (this one matched already)."""
        found: list[Route] = []
        for child in self.routes:
            if child.matches(labels):
                found.extend(child.destinations(labels))
                if not child.continue_matching:
                    break
        return found or ([self] if self.receiver else [])


def routes_for(routes: tuple[Route, ...], labels: dict[str, str]) -> list[Route]:
    """Every route that takes the alert: the top-level list behaves as the children of a root."""
    return Route("", routes=routes).destinations(labels)


@dataclass(frozen=True)
class RuleSet:
    groups: tuple[RuleGroup, ...] = ()
    receivers: dict[str, Receiver] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()

    @property
    def rules(self) -> list[Rule]:
        return [rule for group in self.groups for rule in group.rules]

    @property
    def alerting_rules(self) -> list[Rule]:
        return [rule for rule in self.rules if not rule.record]


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class YamlReader:
    """Walks the YAML node tree, so that every problem can name its line."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[str] = []
        self.around: yaml.Node | None = None  # where a missing key is reported

    def problem(self, node: yaml.Node | None, where: str, message: str) -> None:
        node = node if node is not None else self.around
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        self.problems.append(f"{self.filename}{line}: {where}: {message}")

    def mapping(self, node: yaml.Node, where: str, allowed: set[str]) -> dict[str, yaml.Node] | None:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, where, "expected a mapping (key: value lines)")
            return None
        result: dict[str, yaml.Node] = {}
        for key, value in node.value:
            name = str(key.value)
            if name not in allowed:
                self.problem(key, where, f"unknown key {name!r}; expected one of {', '.join(sorted(allowed))}")
            elif name in result:
                self.problem(key, where, f"{name!r} is given twice")
            else:
                result[name] = value
        return result

    def sequence(self, node: yaml.Node, where: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, where, "expected a list")
            return []
        return list(node.value)

    def text(self, node: yaml.Node | None, where: str, required: bool = True) -> str:
        if node is None:
            if required:
                self.problem(None, where, "is required")
            return ""
        if not isinstance(node, yaml.ScalarNode) or (required and not str(node.value).strip()):
            self.problem(node, where, "expected a non-empty value")
            return ""
        return str(node.value)

    def duration(self, node: yaml.Node | None, where: str, default: float, allow_zero: bool = False) -> float:
        if node is None:
            return default
        raw = self.text(node, where)
        if allow_zero and raw.strip() in ("0", "0s"):
            return 0.0
        try:
            return duration_seconds(raw)
        except ValueError as exc:
            self.problem(node, where, f"{raw!r} {exc}")
            return default

    def number(self, node: yaml.Node | None, where: str) -> float:
        raw = self.text(node, where)
        try:
            return float(raw)
        except ValueError:
            if raw:
                self.problem(node, where, f"{raw!r} is not a number")
            return 0.0

    def names(self, node: yaml.Node | None, where: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if node is None:
            return default
        names = tuple(self.text(item, where) for item in self.sequence(node, where))
        for name, item in zip(names, node.value, strict=False):
            if name and not is_label_name(name):
                self.problem(item, where, f"{name!r} is not a label name")
        return names

    def labels(self, node: yaml.Node | None, where: str, templated: bool = True) -> tuple[tuple[str, str], ...]:
        """A mapping of label names to values; with `templated`, each value a template that must parse."""
        if node is None:
            return ()
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, where, "expected a mapping of names to values")
            return ()
        pairs = []
        for key, value in node.value:
            name, text = str(key.value), self.text(value, f"{where}.{key.value}", required=False)
            if not is_label_name(name):
                self.problem(key, where, f"{name!r} is not a label name")
            if templated:
                problem = templates.check(text)
                if problem is not None:
                    self.problem(value, f"{where}.{name}", f"template: {problem}")
            elif "{{" in text:
                self.problem(value, f"{where}.{name}", "cannot hold templates")
            pairs.append((name, text))
        return tuple(sorted(pairs))

    def matchers(self, node: yaml.Node | None, where: str) -> tuple[Matcher, ...]:
        """A selector (`'{a="b", c=~"d"}'`), or Alertmanager's list of matchers (`['a="b"', 'c=~"d"']`)."""
        if node is None:
            return ()
        items = list(node.value) if isinstance(node, yaml.SequenceNode) else [node]
        found: list[Matcher] = []
        for item in items:
            raw = self.text(item, where)
            try:
                found.extend(parse_selector(raw if raw.lstrip().startswith("{") else "{" + raw + "}"))
            except InvalidArgument as exc:
                self.problem(item, where, str(exc))
        return tuple(found)


_PROMETHEUS_RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
_RULE_KEYS = {
    *_PROMETHEUS_RULE_KEYS,
    "metric",
    "aggregation",
    "window",
    "group_by",
    "op",
    "threshold",
    "liveness",
    "agent_labels",
    "for",
    "labels",
    "annotations",
}


def _expression(reader: YamlReader, node: yaml.Node | None, where: str) -> str:
    """The rule's PromQL, checked by the same parser the metrics service evaluates it with."""
    expr = reader.text(node, f"{where}: expr")
    if expr:
        try:
            promql_parser.parse(expr)
        except (ValueError, TypeError) as exc:
            message = " ".join(str(exc).split())
            reader.problem(node, f"{where}: expr", f"could not parse expression: {message}")
    return expr


def _prometheus_rule(reader: YamlReader, node: yaml.Node, keys: dict[str, yaml.Node], group: str) -> Rule | None:
    """A rule of Prometheus' format: `alert` or `record`, with `expr`."""
    recording = "record" in keys
    if recording and "alert" in keys:
        reader.problem(node, f"group {group}: rule", "give only one of `alert` and `record`")
        return None
    field_name = "record" if recording else "alert"
    name = reader.text(keys.get(field_name), f"group {group}: rule: {field_name}")
    where = f"group {group}: {'recording rule' if recording else 'rule'} {name or '?'}"
    if recording:
        if name and not is_metric_name(name):
            reader.problem(keys["record"], where, f"{name!r} is not a valid metric name")
        for key in ("for", "keep_firing_for", "annotations"):
            if key in keys:
                reader.problem(keys[key], where, f"a recording rule has no `{key}` (only alerting rules do)")
    expr = _expression(reader, keys.get("expr"), where)
    labels = reader.labels(keys.get("labels"), f"{where}: labels", templated=not recording)
    for label, _ in labels:
        if label == "__name__":
            reader.problem(keys.get("labels"), f"{where}: labels", "a rule cannot set __name__")
    return Rule(
        name=name,
        group=group,
        condition=PromQLCondition(expr),
        for_s=reader.duration(keys.get("for"), f"{where}: for", 0.0, allow_zero=True),
        keep_firing_for_s=reader.duration(
            keys.get("keep_firing_for"), f"{where}: keep_firing_for", 0.0, allow_zero=True
        ),
        labels=labels,
        annotations=reader.labels(keys.get("annotations"), f"{where}: annotations"),
        record=recording,
    )


def _rule(reader: YamlReader, node: yaml.Node, group: str, seen: set[str]) -> Rule | None:
    keys = reader.mapping(node, f"group {group}: rule", _RULE_KEYS)
    if keys is None:
        return None
    reader.around = node
    if "expr" in keys or "record" in keys:
        for legacy in sorted(set(keys) - _PROMETHEUS_RULE_KEYS):
            reader.problem(keys[legacy], f"group {group}: rule", f"`{legacy}` does not go with `expr`")
        return _prometheus_rule(reader, node, keys, group)
    name = reader.text(keys.get("alert"), f"group {group}: rule: alert")
    where = f"group {group}: rule {name or '?'}"
    if name and not is_label_name(name):
        reader.problem(keys["alert"], where, f"alert name {name!r} must match {LABEL_NAME_RULE}")
    if name in seen:
        reader.problem(keys.get("alert"), where, "another rule of this file has the same name")
    seen.add(name)
    condition: MetricCondition | LivenessCondition | None = None
    if ("metric" in keys) == ("liveness" in keys):
        reader.problem(
            node, where, "give `expr` (PromQL), or one of `metric` (a selector) or `liveness` (agent statuses)"
        )
    elif "metric" in keys:
        selector = reader.text(keys["metric"], f"{where}: metric")
        matchers: tuple[Matcher, ...] = ()
        try:
            matchers = tuple(parse_selector(selector))
            if not any(m.type is MatchType.EQUAL and m.value for m in matchers):
                reader.problem(keys["metric"], f"{where}: metric", "needs at least one label matched exactly")
        except InvalidArgument as exc:
            reader.problem(keys["metric"], f"{where}: metric", str(exc))
        aggregation = reader.text(keys.get("aggregation"), f"{where}: aggregation", required=False) or "avg"
        if aggregation not in AGGREGATIONS:
            reader.problem(keys.get("aggregation"), where, f"aggregation {aggregation!r} is not one of {AGGREGATIONS}")
        op = reader.text(keys.get("op"), f"{where}: op")
        if op and op not in COMPARISONS:
            reader.problem(keys.get("op"), where, f"op {op!r} is not one of {' '.join(COMPARISONS)}")
        condition = MetricCondition(
            selector=selector,
            matchers=matchers,
            aggregation=aggregation,
            window_s=reader.duration(keys.get("window"), f"{where}: window", 300.0),
            group_by=reader.names(keys.get("group_by"), f"{where}: group_by", ("host",)),
            op=op,
            threshold=reader.number(keys.get("threshold"), f"{where}: threshold"),
        )
    else:
        statuses = reader.names(keys["liveness"], f"{where}: liveness", ())
        for status, item in zip(statuses, reader.sequence(keys["liveness"], f"{where}: liveness"), strict=False):
            if status not in LIVENESS_STATUSES:
                reader.problem(item, f"{where}: liveness", f"{status!r} is not one of {LIVENESS_STATUSES}")
        if not statuses:
            reader.problem(keys["liveness"], f"{where}: liveness", "name at least one status (stale, offline)")
        condition = LivenessCondition(
            statuses, reader.labels(keys.get("agent_labels"), f"{where}: agent_labels", templated=False)
        )
    if condition is None:
        return None
    return Rule(
        name=name,
        group=group,
        condition=condition,
        for_s=reader.duration(keys.get("for"), f"{where}: for", 0.0, allow_zero=True),
        keep_firing_for_s=reader.duration(keys.get("keep_firing_for"), f"{where}: keep_firing_for", 0.0, True),
        labels=reader.labels(keys.get("labels"), f"{where}: labels"),
        annotations=reader.labels(keys.get("annotations"), f"{where}: annotations"),
    )


_ROUTE_KEYS = {
    "receiver",
    "matchers",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "continue",
    "routes",
}


def _route(
    reader: YamlReader, node: yaml.Node, receivers: dict[str, Receiver], parent: Route, path: str
) -> Route | None:
    """One route (at `path` in the tree) and its children, each inheriting what it does not set."""
    fields = reader.mapping(node, "route", _ROUTE_KEYS)
    if fields is None:
        return None
    receiver = reader.text(fields.get("receiver"), "route: receiver", required=not parent.receiver) or parent.receiver
    where = f"route to {receiver or '?'}"
    if receiver and receiver not in receivers:
        reader.problem(fields.get("receiver"), where, f"no receiver is named {receiver!r}")
    continue_matching = False
    if "continue" in fields:
        text = reader.text(fields["continue"], f"{where}: continue")
        if text not in ("true", "false"):
            reader.problem(fields["continue"], f"{where}: continue", "expected true or false")
        continue_matching = text == "true"
    route = Route(
        receiver=receiver,
        matchers=reader.matchers(fields.get("matchers"), f"{where}: matchers"),
        group_by=reader.names(fields.get("group_by"), f"{where}: group_by", parent.group_by),
        group_wait_s=reader.duration(fields.get("group_wait"), f"{where}: group_wait", parent.group_wait_s, True),
        group_interval_s=reader.duration(
            fields.get("group_interval"), f"{where}: group_interval", parent.group_interval_s
        ),
        repeat_interval_s=reader.duration(
            fields.get("repeat_interval"), f"{where}: repeat_interval", parent.repeat_interval_s
        ),
        continue_matching=continue_matching,
        path=path,
    )
    children = [
        _route(reader, item, receivers, route, f"{path}.{index}")
        for index, item in enumerate(
            reader.sequence(fields["routes"], f"{where}: routes") if "routes" in fields else []
        )
    ]
    return replace(route, routes=tuple(child for child in children if child is not None))


def _notifications(reader: YamlReader, node: yaml.Node) -> tuple[dict[str, Receiver], tuple[Route, ...]]:
    keys = reader.mapping(node, "notifications", {"receivers", "routes", "route"}) or {}
    receivers: dict[str, Receiver] = {}
    for item in reader.sequence(keys["receivers"], "notifications: receivers") if "receivers" in keys else []:
        fields = reader.mapping(item, "receiver", {"name", "webhook_url", "timeout"}) or {}
        name = reader.text(fields.get("name"), "receiver: name")
        url = reader.text(fields.get("webhook_url"), f"receiver {name}: webhook_url")
        if url and not url.startswith(("http://", "https://")):
            reader.problem(
                fields.get("webhook_url"), f"receiver {name}", "webhook_url must be an http:// or https:// URL"
            )
        if name in receivers:
            reader.problem(item, f"receiver {name}", "another receiver has the same name")
        receivers[name] = Receiver(name, url, reader.duration(fields.get("timeout"), f"receiver {name}: timeout", 10.0))
    routes: list[Route] = []
    if "route" in keys and "routes" in keys:
        reader.problem(keys["routes"], "notifications", "give either `route:` (a tree, as Alertmanager's) or `routes:`")
    elif "route" in keys:
        root = _route(reader, keys["route"], receivers, Route(""), "r")
        routes = [root] if root is not None else []
    elif "routes" in keys:
        for index, item in enumerate(reader.sequence(keys["routes"], "notifications: routes")):
            route = _route(reader, item, receivers, Route(""), str(index))
            if route is not None:
                routes.append(route)
    if receivers and not routes:
        reader.problem(node, "notifications", "receivers are configured but no route sends anything to them")
    return receivers, tuple(routes)


def compose_yaml(text: str, filename: str) -> yaml.Node | None:
    """The YAML node tree of a file (None when empty); RulesError naming the line where it breaks."""
    try:
        return yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise RulesError([f"{filename}{line}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None


def load_rules(text: str, filename: str) -> RuleSet:
    """The rule set of a file's text; raises RulesError listing every problem."""
    reader = YamlReader(filename)
    root = compose_yaml(text, filename)
    if root is None:
        raise RulesError([f"{filename}: the file is empty; it needs a `groups:` list"])
    top = reader.mapping(root, "file", {"groups", "notifications"}) or {}
    groups: list[RuleGroup] = []
    seen_groups: set[str] = set()
    seen_rules: set[str] = set()
    for node in reader.sequence(top["groups"], "groups") if "groups" in top else []:
        keys = reader.mapping(node, "group", {"name", "interval", "rules", "limit"})
        if keys is None:
            continue
        name = reader.text(keys.get("name"), "group: name")
        if name in seen_groups:
            reader.problem(keys.get("name"), f"group {name}", "another group has the same name")
        seen_groups.add(name)
        interval = reader.duration(keys.get("interval"), f"group {name}: interval", 30.0)
        rules = []
        if "rules" in keys:
            rules = [_rule(reader, item, name, seen_rules) for item in reader.sequence(keys["rules"], f"group {name}")]
        else:
            reader.problem(node, f"group {name}", "has no `rules:` list")
        groups.append(RuleGroup(name, interval, tuple(rule for rule in rules if rule is not None)))
    if "groups" not in top:
        reader.problem(root, "file", "needs a `groups:` list")
    receivers, routes = _notifications(reader, top["notifications"]) if "notifications" in top else ({}, ())
    if reader.problems:
        raise RulesError(reader.problems)
    return RuleSet(_keyed(groups), receivers, routes)


def _keyed(groups: list[RuleGroup]) -> tuple[RuleGroup, ...]:
    """The groups with each rule's key: a name shared by several rules of the file (Prometheus
    allows it) is told apart by group and position, so each rule keeps its own alerts."""
    names = [rule.name for group in groups for rule in group.rules]
    return tuple(
        replace(
            group,
            rules=tuple(
                replace(rule, key=f"{rule.name}@{group.name}#{index}") if names.count(rule.name) > 1 else rule
                for index, rule in enumerate(group.rules)
            ),
        )
        for group in groups
    )


def unknown_metrics(rules: RuleSet, known: set[str]) -> list[tuple[str, str]]:
    """(rule, metric) pairs whose metric no agent has sent yet: a warning, not an error, since a
    rule may well be written before its exporter runs."""
    pairs = []
    for rule in rules.rules:
        if isinstance(rule.condition, MetricCondition):
            for m in rule.condition.matchers:
                if m.name == "__name__" and m.type is MatchType.EQUAL and m.value not in known:
                    pairs.append((rule.name, m.value))
    return pairs


def describe(rule: Rule) -> str:
    return rule.condition.describe()


def as_dict(labels: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return dict(labels)
