"""The rule engine: evaluates every group at its interval, keeps each rule's alerts (persisted
after every evaluation, so a restart forgets nothing, `for` included), records each rule's
evaluation health, writes what Prometheus writes (recording rules' results, `ALERTS` and
`ALERTS_FOR_STATE`), and tells watchers what changed.

PromQL rules are evaluated by the metrics service's PromQL engine (InstantQuery); what they
write goes through its ingest path with the service token. Agent liveness becomes series too
(`infrawatch_agent_up`, `infrawatch_agent_heartbeat_age_seconds`), written just before a group
whose rules read them is evaluated, so a Prometheus-format rule can say "host down".

Rules of a group are evaluated in order as Prometheus does where it matters: a rule that reads
a series recorded earlier in its group waits for it; the others run in parallel, each distinct
query once. A failed evaluation (metrics or agents unavailable, a bad expression) leaves the
rule's alerts exactly as they were — never a false "resolved" — and shows as its last error.
A rule removed from the file resolves its firing alerts (notified as resolved) instead of
letting them vanish.
"""

from __future__ import annotations

import logging
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace

from agent.logs import event
from agent.metric_kinds import KINDS
from services.alerts import templates
from services.alerts.domain import RESOLVED_KEPT_MS, Alert, DuplicateLabelSets, Found, State, advance
from services.alerts.ports import AlertStore, LivenessSource, MetricsSource, WrittenSeries
from services.alerts.rules import LivenessCondition, MetricCondition, PromQLCondition, Rule, RuleSet, unknown_metrics
from services.alerts.watch import AlertHub
from services.common.errors import DomainError

_log = logging.getLogger("infrawatch.alerts.engine")
AGENT_UP = "infrawatch_agent_up"
AGENT_HEARTBEAT_AGE = "infrawatch_agent_heartbeat_age_seconds"
LIVENESS_SERIES = (AGENT_UP, AGENT_HEARTBEAT_AGE)
STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
"""Prometheus' stale marker: written when a series the rules wrote is no longer produced."""
_LIVENESS_KEY = "\0liveness"
SeriesKey = frozenset[tuple[str, str]]


def reads_liveness(rule: Rule) -> bool:
    return isinstance(rule.condition, PromQLCondition) and any(name in rule.condition.expr for name in LIVENESS_SERIES)


def _reads(rule: Rule, name: str) -> bool:
    return (
        isinstance(rule.condition, PromQLCondition)
        and re.search(r"(?<![A-Za-z0-9_:])" + re.escape(name) + r"(?![A-Za-z0-9_:])", rule.condition.expr) is not None
    )


QUERIES_PER_CALL = 50
"""PromQL expressions asked in one InstantQueries call: few enough that the engine's workers
share a cycle's queries, many enough that a call's own cost is spread thin."""


def _one_of(
    batch: Future[list[tuple[list[Found] | DomainError, float]]], index: int
) -> Future[tuple[list[Found] | DomainError, float]]:
    """The answer to one expression of a batched call, as a future of its own."""
    one: Future[tuple[list[Found] | DomainError, float]] = Future()
    batch.add_done_callback(
        lambda done: (
            one.set_exception(exc) if (exc := done.exception()) is not None else one.set_result(done.result()[index])
        )
    )
    return one


def waves(rules: Sequence[Rule]) -> list[list[Rule]]:
    """The group's rules in runs that may be evaluated together: a rule reading a series that a
    recording rule earlier in the group writes starts a new run, so it sees this cycle's value."""
    result: list[list[Rule]] = []
    recorded: set[str] = set()
    for rule in rules:
        if result and not any(_reads(rule, name) for name in recorded):
            result[-1].append(rule)
        else:
            result.append([rule])
            recorded = set()
        if rule.record:
            recorded.add(rule.name)
    return result


@dataclass(frozen=True)
class RuleHealth:
    last_evaluation_ms: int
    duration_ms: float
    error: str = ""


class AlertEngine:
    def __init__(
        self,
        store: AlertStore,
        metrics: MetricsSource,
        liveness: LivenessSource,
        hub: AlertHub,
        now_ms: Callable[[], int],
        pool: Executor,
        external_labels: dict[str, str] | None = None,
        external_url: str = "",
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._liveness = liveness
        self._hub = hub
        self._now_ms = now_ms
        self._pool = pool
        self.external_labels = dict(external_labels or {})
        self.external_url = external_url
        self._lock = threading.Lock()
        self._rules = RuleSet()
        self._alerts: dict[str, dict[str, Alert]] = {}
        self._health: dict[str, RuleHealth] = {}
        self._written: dict[str, set[SeriesKey]] = {}
        self.loaded_at_ms = 0
        self.leading = True
        """Whether this replica evaluates and writes (see leadership.py); a follower only reads."""

    def start_with(self, rules: RuleSet) -> None:
        """Load the persisted alerts (their `for` state included), then use `rules`."""
        by_rule: dict[str, dict[str, Alert]] = {}
        for alert in self._store.load_alerts():
            by_rule.setdefault(alert.rule, {})[alert.fingerprint] = alert
        with self._lock:
            self._alerts = by_rule
        self.use(rules)

    def use(self, rules: RuleSet) -> None:
        """Evaluate `rules` from now on. Alerts of a rule no longer in the file resolve (and are
        notified as resolved) rather than vanish; pending ones are dropped."""
        keys = {rule.key for rule in rules.rules}
        now = self._now_ms()
        with self._lock:
            removed = {key: alerts for key, alerts in self._alerts.items() if key not in keys} if self.leading else {}
            for key, alerts in removed.items():
                kept = {
                    fp: _resolved(alert, now)
                    for fp, alert in alerts.items()
                    if alert.state is not State.PENDING and _still_listed(_resolved(alert, now), now)
                }
                self._alerts[key] = kept
            self._rules = rules
            self._health = {name: health for name, health in self._health.items() if name in keys}
            self.loaded_at_ms = now
        for key in removed:
            self._store.replace_alerts(key, list(self._alerts.get(key, {}).values()))
            changed = [a for a in self._alerts.get(key, {}).values() if removed[key].get(a.fingerprint) != a]
            if changed:
                self._hub.publish(changed)
        self._warn_about_unknown_metrics(rules)

    def refresh_from_store(self) -> None:
        """A follower's view: the alerts the leader persisted; watchers are told what changed."""
        by_rule: dict[str, dict[str, Alert]] = {}
        for alert in self._store.load_alerts():
            by_rule.setdefault(alert.rule, {})[alert.fingerprint] = alert
        with self._lock:
            before = {a.fingerprint: a for alerts in self._alerts.values() for a in alerts.values()}
            self._alerts = by_rule
        changed = [a for alerts in by_rule.values() for a in alerts.values() if before.get(a.fingerprint) != a]
        if changed:
            self._hub.publish(changed)

    def take_over(self) -> None:
        """Become the leader: continue from what the previous one persisted."""
        self.refresh_from_store()
        self._written = {}
        self.leading = True

    def _forget_removed(self, now: int) -> None:
        """Resolved alerts of removed rules go once they are no longer listed."""
        keys = {rule.key for rule in self._rules.rules}
        with self._lock:
            stale = [key for key in self._alerts if key not in keys]
            emptied = []
            for key in stale:
                kept = {fp: a for fp, a in self._alerts[key].items() if _still_listed(a, now)}
                if len(kept) != len(self._alerts[key]):
                    self._alerts[key] = kept
                    emptied.append(key)
        for key in emptied:
            self._store.replace_alerts(key, list(self._alerts.get(key, {}).values()))
        if emptied:
            self._store.drop_rules_except(keys | {k for k, v in self._alerts.items() if v})

    def _warn_about_unknown_metrics(self, rules: RuleSet) -> None:
        try:
            known = self._metrics.metric_names()
        except DomainError:
            return  # metrics is not up yet; the rules' own health will tell
        known |= set(KINDS)  # the InfraWatch agent's own metrics arrive with the first agent
        for rule, metric in unknown_metrics(rules, known):
            event(_log, "no agent has sent this rule's metric yet", logging.WARNING, rule=rule, metric=metric)

    @property
    def rules(self) -> RuleSet:
        return self._rules

    def expression_of(self, rule_key: str) -> str:
        """The PromQL (or the condition in words) of the rule with this key; empty once removed."""
        for rule in self._rules.rules:
            if rule.key == rule_key:
                return rule.condition.describe()
        return ""

    def alerts(self) -> list[Alert]:
        with self._lock:
            return [alert for alerts in self._alerts.values() for alert in alerts.values()]

    def health(self, rule: str) -> RuleHealth | None:
        return self._health.get(rule)

    def _ask(self, rule: Rule, now_ms: int) -> tuple[list[Found] | DomainError, float]:
        """The source's answer to the rule's query (or why there is none), and how long it took."""
        started = time.perf_counter()
        try:
            condition = rule.condition
            if isinstance(condition, PromQLCondition):
                answer = self._metrics.instant_query(condition.expr, now_ms)
            elif isinstance(condition, MetricCondition):
                answer = self._metrics.evaluate(condition, now_ms)
            else:
                assert isinstance(condition, LivenessCondition)
                answer = self._liveness.evaluate(condition, now_ms)
            return answer, (time.perf_counter() - started) * 1000
        except DomainError as exc:
            return exc, (time.perf_counter() - started) * 1000

    def _ask_many(self, exprs: list[str], now_ms: int) -> list[tuple[list[Found] | DomainError, float]]:
        """Several PromQL expressions in one call; each answer, and the call's time shared out."""
        started = time.perf_counter()
        try:
            answers: list[list[Found] | DomainError] = list(self._metrics.instant_queries(exprs, now_ms))
        except DomainError as exc:
            answers = [exc] * len(exprs)
        each_ms = (time.perf_counter() - started) * 1000 / max(1, len(exprs))
        return [(answer, each_ms) for answer in answers]

    def expand(self, now_ms: int) -> Callable[[str, dict[str, str], float], str]:
        """Renders a rule's templates at `now_ms`: `query` asks the metrics service's PromQL engine."""

        def query(expr: str) -> list[templates.Sample]:
            try:
                found = self._metrics.instant_query(expr, now_ms)
            except DomainError as exc:
                raise templates.TemplateError(f"query {expr!r}: {exc}") from None
            return [templates.Sample(item.labels, item.value) for item in found]

        def render(text: str, labels: dict[str, str], value: float) -> str:
            if "{{" not in text:
                return text
            context = templates.Context(labels, value, self.external_labels, self.external_url, query)
            return templates.render(text, context)

        return render

    def evaluate(self, rule: Rule) -> None:
        self.evaluate_rules([rule])

    def evaluate_rules(self, rules: Sequence[Rule]) -> None:
        """Evaluate `rules` at one instant, in waves (see `waves`): in each, every distinct query
        once, in parallel on the pool (rules that differ only in threshold share one call), then
        every rule against its answer, then what they write, in one write."""
        now = self._now_ms()
        liveness_error: DomainError | None = None
        if any(reads_liveness(rule) for rule in rules):
            liveness_error = self._write_liveness(now)
        for wave in waves(rules):
            asked: dict[tuple[object, ...], Future[tuple[list[Found] | DomainError, float]]] = {}
            expressions: list[str] = []
            for rule in wave:
                if rule.condition.query in asked or (liveness_error and reads_liveness(rule)):
                    continue
                if isinstance(rule.condition, PromQLCondition):
                    if rule.condition.expr not in expressions:
                        expressions.append(rule.condition.expr)
                else:
                    asked[rule.condition.query] = self._pool.submit(self._ask, rule, now)
            for first in range(0, len(expressions), QUERIES_PER_CALL):
                chunk = expressions[first : first + QUERIES_PER_CALL]
                batch = self._pool.submit(self._ask_many, chunk, now)
                for index, expr in enumerate(chunk):
                    asked[("promql", expr)] = _one_of(batch, index)
            written: list[WrittenSeries] = []
            produced: dict[str, set[SeriesKey]] = {}
            for rule in wave:
                if liveness_error is not None and reads_liveness(rule):
                    answer: list[Found] | DomainError = liveness_error
                    duration_ms = 0.0
                else:
                    answer, duration_ms = asked[rule.condition.query].result()
                series = self._settle(rule, answer, duration_ms, now)
                if series is not None:
                    written.extend(series)
                    produced[rule.key] = {frozenset(s.labels.items()) for s in series}
            self._write(written, produced, now, [rule for rule in wave if rule.record])

    def _write_liveness(self, now: int) -> DomainError | None:
        """Every agent's liveness as series at `now`; the error when it could not be written."""
        try:
            agents = self._liveness.liveness()
        except DomainError as exc:
            return exc
        series = []
        for agent in agents:
            labels = {**agent.labels, "host": agent.hostname}
            series.append(
                WrittenSeries(
                    {**labels, "__name__": AGENT_UP},
                    1.0 if agent.online else 0.0,
                    "1 when the agent heartbeats on time (ONLINE), 0 when it is STALE or OFFLINE.",
                )
            )
            series.append(
                WrittenSeries(
                    {**labels, "__name__": AGENT_HEARTBEAT_AGE},
                    max(0.0, (now - agent.heartbeat_at_ms) / 1000),
                    "Seconds since the agent's last heartbeat.",
                )
            )
        try:
            self._write_now(series, {_LIVENESS_KEY: {frozenset(s.labels.items()) for s in series}}, now)
        except DomainError as exc:
            return exc
        return None

    def _write(
        self, series: list[WrittenSeries], produced: dict[str, set[SeriesKey]], now: int, recording: list[Rule]
    ) -> None:
        try:
            self._write_now(series, produced, now)
        except DomainError as exc:
            for rule in recording:
                self._health[rule.key] = RuleHealth(
                    now, self._health.get(rule.key, RuleHealth(now, 0)).duration_ms, str(exc)
                )
            event(_log, "rule results could not be written", logging.WARNING, error=str(exc))

    def _write_now(self, series: list[WrittenSeries], produced: dict[str, set[SeriesKey]], now: int) -> None:
        """Write `series` and a stale marker for each series a source wrote last time and not now."""
        markers = [
            WrittenSeries(dict(key), STALE_NAN)
            for source, keys in produced.items()
            for key in self._written.get(source, set()) - keys
        ]
        if series or markers:
            self._metrics.write([*series, *markers], now)
        self._written.update(produced)

    def _settle(
        self, rule: Rule, answer: list[Found] | DomainError, duration_ms: float, now: int
    ) -> list[WrittenSeries] | None:
        """Apply one answer to the rule; the series it writes now (None: it failed, write nothing)."""
        if isinstance(answer, DomainError):
            self._failed(rule, str(answer), duration_ms, now)
            return None
        if rule.record:
            try:
                recorded = _recorded(rule, answer)
            except DuplicateLabelSets as exc:
                self._failed(rule, str(exc), duration_ms, now)
                return None
            self._health[rule.key] = RuleHealth(now, duration_ms)
            return recorded
        found = [item for item in answer if rule.condition.holds(item.value)]
        with self._lock:
            previous = self._alerts.get(rule.key, {})
        try:
            current = advance(rule, previous, found, now, self.expand(now))
        except DuplicateLabelSets as exc:
            self._failed(rule, str(exc), duration_ms, now)
            return None
        changed = [alert for key, alert in current.items() if previous.get(key) != alert]
        gone = [alert for key, alert in previous.items() if key not in current]
        if changed or gone:
            self._store.replace_alerts(rule.key, list(current.values()))
        with self._lock:
            if rule.key in {r.key for r in self._rules.rules}:
                self._alerts[rule.key] = current
        self._health[rule.key] = RuleHealth(now, duration_ms)
        for alert in changed:
            if previous.get(alert.fingerprint) is None or previous[alert.fingerprint].state != alert.state:
                event(
                    _log,
                    f"alert {alert.state.value}",
                    rule=rule.name,
                    fingerprint=alert.fingerprint,
                    labels=alert.labels,
                )
        if changed:
            self._hub.publish(changed)
        return alert_series(current.values()) if isinstance(rule.condition, PromQLCondition) else []

    def _failed(self, rule: Rule, error: str, duration_ms: float, now: int) -> None:
        self._health[rule.key] = RuleHealth(now, duration_ms, error)
        event(
            _log,
            "rule evaluation failed; its alerts stay as they were",
            logging.WARNING,
            rule=rule.name,
            error=error,
        )

    def evaluate_all(self) -> None:
        """Every group once, in order; returns when all are done."""
        for group in self._rules.groups:
            self.evaluate_rules(group.rules)

    def run(self, stop: threading.Event) -> None:
        """Evaluate each group every `interval`, its rules in parallel, until `stop`."""
        due: dict[str, float] = {}
        while not stop.is_set():
            if not self.leading:
                due.clear()  # a new leader evaluates every group at once
                stop.wait(0.2)
                continue
            now = time.monotonic()
            groups = self._rules.groups
            for group in groups:
                if due.get(group.name, 0.0) <= now:
                    due[group.name] = now + group.interval_s
                    try:
                        self.evaluate_rules(group.rules)
                    except Exception:
                        _log.exception("rule evaluation crashed")
            try:
                self._forget_removed(self._now_ms())
            except Exception:
                _log.exception("forgetting the alerts of removed rules failed")
            next_due = min((due.get(g.name, now) for g in groups), default=now + 1.0)
            stop.wait(max(0.05, min(1.0, next_due - time.monotonic())))


def _resolved(alert: Alert, now: int) -> Alert:
    if alert.state is State.FIRING:
        return replace(alert, state=State.RESOLVED, resolved_at_ms=now, keep_firing_since_ms=None)
    return alert


def _still_listed(alert: Alert, now: int) -> bool:
    return alert.state is not State.RESOLVED or now - (alert.resolved_at_ms or now) < RESOLVED_KEPT_MS


def _recorded(rule: Rule, answer: list[Found]) -> list[WrittenSeries]:
    """A recording rule's result as series: `__name__` becomes the rule's name, its labels are set."""
    labels = dict(rule.labels)
    series = [WrittenSeries({**item.labels, **labels, "__name__": rule.name}, item.value) for item in answer]
    if len({frozenset(s.labels.items()) for s in series}) != len(series):
        raise DuplicateLabelSets("the result has two samples with the same labels once the rule's labels are applied")
    return series


def alert_series(alerts: Iterable[Alert]) -> list[WrittenSeries]:
    """ALERTS and ALERTS_FOR_STATE of pending and firing alerts, as Prometheus writes them."""
    series = []
    for alert in alerts:
        if alert.state is State.RESOLVED:
            continue
        series.append(WrittenSeries({**alert.labels, "__name__": "ALERTS", "alertstate": alert.state.value}, 1.0))
        series.append(WrittenSeries({**alert.labels, "__name__": "ALERTS_FOR_STATE"}, alert.active_since_ms / 1000))
    return series
