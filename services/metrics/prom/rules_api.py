"""`/api/v1/rules` and `/api/v1/alerts` as Prometheus answers them, so Grafana's alerting view
and any Prometheus API client see InfraWatch's rules and alerts where they look for them.

The rules and alerts belong to the alerts context: this edge asks it through its typed stub
(ListRules, ListAlerts, with a deadline and the service token) and writes Prometheus' JSON.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import grpc

from infrawatch.alerts.v1 import alerts_pb2, alerts_pb2_grpc
from services.common.clients import call_idempotent
from services.common.errors import InvalidArgument, Unavailable
from services.common.timestamps import rfc3339

_STATES = {
    alerts_pb2.ALERT_STATE_PENDING: "pending",
    alerts_pb2.ALERT_STATE_FIRING: "firing",
}
_TYPES = {"alert": "alerting", "record": "recording", "metric": "alerting", "liveness": "alerting"}


class AlertsRelay:
    """Reads rules and alerts from the alerts service."""

    def __init__(self, channel: grpc.Channel, service_token: str, timeout_s: float) -> None:
        self._stub = alerts_pb2_grpc.AlertServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {service_token}"),)
        self._timeout_s = timeout_s

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return call_idempotent(
                lambda timeout: method(request, timeout=timeout, metadata=self._metadata), timeout_s=self._timeout_s
            )
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "no response"
            raise Unavailable(f"the alerts service did not answer ({code}); rules and alerts are unknown") from None

    def rules_and_alerts(self) -> tuple[alerts_pb2.ListRulesResponse, list[alerts_pb2.Alert]]:
        rules = self._call(self._stub.ListRules, alerts_pb2.ListRulesRequest())
        alerts = self._call(self._stub.ListAlerts, alerts_pb2.ListAlertsRequest())
        return rules, list(alerts.alerts)

    def alerts(self) -> list[alerts_pb2.Alert]:
        return list(self._call(self._stub.ListAlerts, alerts_pb2.ListAlertsRequest()).alerts)


def value_text(value: float) -> str:
    """A sample value as Prometheus' rules API writes it: Go's 'e' format, shortest digits."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0e+00"
    digits = len(Decimal(repr(value)).normalize().as_tuple().digits)
    mantissa, exponent = f"{value:.{max(0, digits - 1)}e}".split("e")
    return f"{mantissa}e{exponent[0]}{abs(int(exponent)):02d}"


def _alert(alert: alerts_pb2.Alert) -> dict[str, Any]:
    return {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "state": _STATES.get(alert.state, "inactive"),
        "activeAt": rfc3339(alert.active_since.ToMilliseconds()),
        "value": value_text(alert.value),
    }


def alerts_data(alerts: list[alerts_pb2.Alert]) -> dict[str, Any]:
    return {"alerts": [_alert(a) for a in alerts if a.state in _STATES]}


def rules_data(rules: alerts_pb2.ListRulesResponse, alerts: list[alerts_pb2.Alert], kind: str = "") -> dict[str, Any]:
    """The groups of `rules`, each rule with its alerts; `kind` "alert" or "record" keeps one type."""
    if kind not in ("", "alert", "record"):
        raise InvalidArgument(f"invalid parameter 'type': {kind!r} is not alert or record")
    by_rule: dict[str, list[alerts_pb2.Alert]] = {}
    for alert in alerts:
        if alert.state in _STATES:
            by_rule.setdefault(alert.rule, []).append(alert)
    groups: dict[str, dict[str, Any]] = {}
    for rule in rules.rules:
        rule_type = _TYPES.get(rule.kind, "alerting")
        if kind and rule_type != {"alert": "alerting", "record": "recording"}[kind]:
            continue
        group = groups.setdefault(
            rule.group,
            {
                "name": rule.group,
                "file": rules.file,
                "rules": [],
                "interval": rule.interval.ToMilliseconds() / 1000,
                "limit": 0,
                "evaluationTime": 0.0,
                "lastEvaluation": rfc3339(None),
            },
        )
        evaluated = rule.HasField("last_evaluation")
        entry: dict[str, Any] = {
            "name": rule.name,
            "query": rule.condition,
            "labels": dict(rule.labels),
            "health": ("err" if rule.last_error else "ok") if evaluated else "unknown",
            "evaluationTime": rule.last_evaluation_duration.ToMilliseconds() / 1000,
            "lastEvaluation": rfc3339(rule.last_evaluation.ToMilliseconds() if evaluated else None),
            "type": rule_type,
        }
        if rule.last_error:
            entry["lastError"] = rule.last_error
        if rule_type == "alerting":
            own = by_rule.get(rule.key or rule.name, [])
            states = {a.state for a in own}
            entry.update(
                {
                    "state": "firing"
                    if alerts_pb2.ALERT_STATE_FIRING in states
                    else "pending"
                    if alerts_pb2.ALERT_STATE_PENDING in states
                    else "inactive",
                    "duration": getattr(rule, "for").ToMilliseconds() / 1000,
                    "keepFiringFor": rule.keep_firing_for.ToMilliseconds() / 1000,
                    "annotations": dict(rule.annotations),
                    "alerts": [_alert(a) for a in own],
                }
            )
        group["rules"].append(entry)
        group["evaluationTime"] += entry["evaluationTime"]
        if evaluated:
            group["lastEvaluation"] = max(group["lastEvaluation"], entry["lastEvaluation"])
    return {"groups": list(groups.values())}
