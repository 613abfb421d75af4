"""The alerts service's own telemetry, read from the engine at scrape time: alerts by state and
rules, with how many failed their last evaluation (a rule that cannot be evaluated keeps its
alerts as they were, so this gauge is what tells an operator it has gone blind)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.alerts.engine import AlertEngine


class AlertsCollector(Collector):
    def __init__(self, engine: AlertEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_state = Counter(alert.state.name.lower() for alert in self._engine.alerts())
        alerts = GaugeMetricFamily("infrawatch_alerts", "Alerts known to the engine, by state.", labels=["state"])
        for state, count in sorted(by_state.items()):
            alerts.add_metric([state], count)
        yield alerts
        rules = self._engine.rules.rules
        yield GaugeMetricFamily("infrawatch_alert_rules", "Rules loaded from the rules file.", len(rules))
        failing = sum(1 for rule in rules if (health := self._engine.health(rule.key)) is not None and health.error)
        yield GaugeMetricFamily(
            "infrawatch_alert_rules_failing", "Rules whose last evaluation failed (their alerts are held).", failing
        )
