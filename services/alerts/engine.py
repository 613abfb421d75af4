"""The rule engine: evaluates every group at its interval, keeps each rule's alerts (persisted
after every evaluation, so a restart forgets nothing), records each rule's evaluation health, and
tells watchers what changed.

A failed evaluation (metrics or agents unavailable) leaves the rule's alerts exactly as they
were — never a false "resolved" — and shows on the rule as its last error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from agent.logs import event
from agent.metric_kinds import KINDS
from services.alerts.domain import Alert, Found, advance
from services.alerts.ports import AlertStore, LivenessSource, MetricsSource
from services.alerts.rules import MetricCondition, Rule, RuleSet, unknown_metrics
from services.alerts.watch import AlertHub
from services.common.errors import DomainError

_log = logging.getLogger("infrawatch.alerts.engine")


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
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._liveness = liveness
        self._hub = hub
        self._now_ms = now_ms
        self._pool = pool
        self._lock = threading.Lock()
        self._rules = RuleSet()
        self._alerts: dict[str, dict[str, Alert]] = {}
        self._health: dict[str, RuleHealth] = {}
        self.loaded_at_ms = 0

    def start_with(self, rules: RuleSet) -> None:
        """Load the persisted alerts, then use `rules` (alerts of rules no longer there are dropped)."""
        by_rule: dict[str, dict[str, Alert]] = {}
        for alert in self._store.load_alerts():
            by_rule.setdefault(alert.rule, {})[alert.fingerprint] = alert
        with self._lock:
            self._alerts = by_rule
        self.use(rules)

    def use(self, rules: RuleSet) -> None:
        names = {rule.name for rule in rules.rules}
        self._store.drop_rules_except(names)
        with self._lock:
            self._rules = rules
            self._alerts = {name: alerts for name, alerts in self._alerts.items() if name in names}
            self._health = {name: health for name, health in self._health.items() if name in names}
            self.loaded_at_ms = self._now_ms()
        self._warn_about_unknown_metrics(rules)

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

    def alerts(self) -> list[Alert]:
        with self._lock:
            return [alert for alerts in self._alerts.values() for alert in alerts.values()]

    def health(self, rule: str) -> RuleHealth | None:
        return self._health.get(rule)

    def _ask(self, rule: Rule, now_ms: int) -> tuple[list[Found] | DomainError, float]:
        """The source's answer to the rule's query (or why there is none), and how long it took."""
        started = time.perf_counter()
        source = self._metrics if isinstance(rule.condition, MetricCondition) else self._liveness
        try:
            return source.evaluate(rule.condition, now_ms), (time.perf_counter() - started) * 1000  # type: ignore[arg-type]
        except DomainError as exc:
            return exc, (time.perf_counter() - started) * 1000

    def evaluate(self, rule: Rule) -> None:
        self.evaluate_rules([rule])

    def evaluate_rules(self, rules: Sequence[Rule]) -> None:
        """Evaluate `rules` at one instant: each distinct query once, in parallel on the pool (rules
        that differ only in threshold share one call), then every rule against its answer."""
        now = self._now_ms()
        asked: dict[tuple[object, ...], Future[tuple[list[Found] | DomainError, float]]] = {}
        for rule in rules:
            if rule.condition.query not in asked:
                asked[rule.condition.query] = self._pool.submit(self._ask, rule, now)
        for rule in rules:
            answer, duration_ms = asked[rule.condition.query].result()
            self._settle(rule, answer, duration_ms, now)

    def _settle(self, rule: Rule, answer: list[Found] | DomainError, duration_ms: float, now: int) -> None:
        if isinstance(answer, DomainError):
            self._health[rule.name] = RuleHealth(now, duration_ms, str(answer))
            event(
                _log,
                "rule evaluation failed; its alerts stay as they were",
                logging.WARNING,
                rule=rule.name,
                error=str(answer),
            )
            return
        found = [item for item in answer if rule.condition.holds(item.value)]
        with self._lock:
            previous = self._alerts.get(rule.name, {})
            current = advance(rule, previous, found, now)
        changed = [alert for key, alert in current.items() if previous.get(key) != alert]
        gone = [alert for key, alert in previous.items() if key not in current]
        if changed or gone:
            self._store.replace_alerts(rule.name, list(current.values()))
        with self._lock:
            if rule.name in {r.name for r in self._rules.rules}:
                self._alerts[rule.name] = current
        self._health[rule.name] = RuleHealth(now, duration_ms)
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

    def evaluate_all(self) -> None:
        """Every rule once; returns when all are done."""
        self.evaluate_rules(self._rules.rules)

    def run(self, stop: threading.Event) -> None:
        """Evaluate each group every `interval`, its rules in parallel, until `stop`."""
        due: dict[str, float] = {}
        while not stop.is_set():
            now = time.monotonic()
            groups = self._rules.groups
            for group in groups:
                if due.get(group.name, 0.0) <= now:
                    due[group.name] = now + group.interval_s
                    try:
                        self.evaluate_rules(group.rules)
                    except Exception:
                        _log.exception("rule evaluation crashed")
            next_due = min((due.get(g.name, now) for g in groups), default=now + 1.0)
            stop.wait(max(0.05, min(1.0, next_due - time.monotonic())))
