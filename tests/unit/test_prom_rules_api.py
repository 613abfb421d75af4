"""/api/v1/rules and /api/v1/alerts written as Prometheus writes them, from the alerts service's answers."""

from __future__ import annotations

import pytest
from google.protobuf.duration_pb2 import Duration

from infrawatch.alerts.v1 import alerts_pb2
from services.common.errors import InvalidArgument
from services.common.timestamps import to_timestamp
from services.metrics.prom.rules_api import alerts_data, rules_data, value_text


def _seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromMilliseconds(int(value * 1000))
    return duration


@pytest.mark.parametrize(
    ("value", "text"),
    [(80.0, "8e+01"), (93.5, "9.35e+01"), (0.0, "0e+00"), (1e-7, "1e-07"), (-2.5, "-2.5e+00"), (float("nan"), "NaN")],
)
def test_values_are_written_in_gos_shortest_e_format(value: float, text: str):
    assert value_text(value) == text


def test_rules_are_grouped_with_their_alerts_health_and_type():
    rules = alerts_pb2.ListRulesResponse(
        file="rules.yml",
        rules=[
            alerts_pb2.Rule(group="g", name="rec", key="rec", kind="record", condition="sum(x)", interval=_seconds(15)),
            alerts_pb2.Rule(
                group="g",
                name="Hot",
                key="Hot",
                kind="alert",
                condition="rec > 1",
                interval=_seconds(15),
                last_evaluation=to_timestamp(1_000),
                last_error="metrics service: UNAVAILABLE",
                annotations={"summary": "{{ $value }}"},
                keep_firing_for=_seconds(60),
                **{"for": _seconds(120)},
            ),
        ],
    )
    alerts = [
        alerts_pb2.Alert(rule="Hot", state=alerts_pb2.ALERT_STATE_PENDING, labels={"a": "1"}, value=2.0),
        alerts_pb2.Alert(rule="Hot", state=alerts_pb2.ALERT_STATE_RESOLVED, labels={"a": "2"}, value=0.0),
    ]
    (group,) = rules_data(rules, alerts)["groups"]
    recording, alerting = group["rules"]
    assert (group["file"], group["interval"]) == ("rules.yml", 15.0)
    assert (recording["type"], recording["health"]) == ("recording", "unknown")
    assert (alerting["type"], alerting["state"], alerting["health"]) == ("alerting", "pending", "err")
    assert (alerting["duration"], alerting["keepFiringFor"]) == (120.0, 60.0)
    assert alerting["lastError"] == "metrics service: UNAVAILABLE"
    assert [a["labels"] for a in alerting["alerts"]] == [{"a": "1"}]  # resolved alerts are not listed
    assert [r["name"] for r in rules_data(rules, alerts, "alert")["groups"][0]["rules"]] == ["Hot"]
    assert [a["state"] for a in alerts_data(alerts)["alerts"]] == ["pending"]
    with pytest.raises(InvalidArgument, match="'type'"):
        rules_data(rules, alerts, "alerts")
