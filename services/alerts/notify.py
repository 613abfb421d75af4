"""Which notifications are due, and what they say: Alertmanager's grouping rules and its webhook
format (version 4), so receivers people already run work unchanged. No I/O here.

Per route and group (the values of the route's `group_by` labels) the service remembers what the
receiver was last told (`notified`: fingerprint → firing) and when. A group is sent
- the first time, `group_wait` after its first alert appeared (so alerts arriving together go
  out together);
- when something changed (a new firing alert, or one the receiver knows as firing resolved),
  at most every `group_interval`;
- unchanged but still firing, every `repeat_interval`.
That memory is persisted after each successful delivery, so a restart neither forgets nor repeats.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from services.alerts.domain import Alert, State
from services.alerts.rules import Route, routes_for
from services.common.timestamps import rfc3339

RETRY_BASE_S = 1.0
RETRY_CAP_S = 60.0


@dataclass(frozen=True)
class GroupState:
    """What one receiver was told about one group of alerts."""

    group_key: str
    receiver: str
    group_labels: dict[str, str]
    first_seen_ms: int
    last_sent_ms: int | None = None
    notified: dict[str, str] = field(default_factory=dict)
    failures: int = 0
    next_attempt_ms: int = 0


@dataclass(frozen=True)
class Delivery:
    group: GroupState
    route: Route
    alerts: list[Alert]

    @property
    def told(self) -> dict[str, str]:
        """What the receiver knows after this delivery: resolved alerts are forgotten once told."""
        return {a.fingerprint: "firing" for a in self.alerts if a.state is State.FIRING}


def group_key(route: Route, labels: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The group's identity: the route (its place in the tree and receiver) and the values of its
    `group_by` labels, as Alertmanager's group key."""
    group_labels = {name: labels.get(name, "") for name in route.group_by}
    labels_text = json.dumps(sorted(group_labels.items()), separators=(",", ":"))
    return f"{route.path}/{route.receiver}:{labels_text}", group_labels


def plan(
    alerts: list[Alert],
    silenced: set[str],
    routes: tuple[Route, ...],
    groups: dict[str, GroupState],
    now_ms: int,
) -> tuple[list[Delivery], dict[str, GroupState]]:
    """The deliveries due now, and the group states to keep (new groups added, finished ones gone)."""
    members: dict[str, list[Alert]] = {}
    routed: dict[str, Route] = {}
    kept = dict(groups)
    for alert in alerts:
        if alert.fingerprint in silenced or alert.state is State.PENDING:
            continue
        for route in routes_for(routes, alert.labels):
            key, group_labels = group_key(route, alert.labels)
            state = kept.get(key)
            if alert.state is State.RESOLVED and (state is None or state.notified.get(alert.fingerprint) != "firing"):
                continue  # the receiver never heard of it firing: nothing to resolve
            if state is None:
                kept[key] = GroupState(key, route.receiver, group_labels, first_seen_ms=now_ms)
            members.setdefault(key, []).append(alert)
            routed[key] = route
    due = []
    for key, state in list(kept.items()):
        current = members.get(key, [])
        if not current:
            if not any(status == "firing" for status in state.notified.values()):
                del kept[key]  # nothing firing, nothing the receiver still believes firing
            continue
        route = routed[key]
        told = {a.fingerprint: ("firing" if a.state is State.FIRING else "resolved") for a in current}
        changed = any(state.notified.get(fp) != status for fp, status in told.items())
        if now_ms < state.next_attempt_ms:
            continue
        if state.last_sent_ms is None:
            ready = now_ms - state.first_seen_ms >= route.group_wait_s * 1000
        elif changed:
            ready = now_ms - state.last_sent_ms >= route.group_interval_s * 1000
        else:
            firing = any(status == "firing" for status in told.values())
            ready = firing and now_ms - state.last_sent_ms >= route.repeat_interval_s * 1000
        if ready:
            due.append(Delivery(state, route, sorted(current, key=lambda a: a.fingerprint)))
    return due, kept


def delivered(delivery: Delivery, now_ms: int) -> GroupState:
    return replace(delivery.group, last_sent_ms=now_ms, notified=delivery.told, failures=0, next_attempt_ms=0)


def failed(delivery: Delivery, now_ms: int) -> GroupState:
    """Retried with exponential backoff (1 s doubling to 60 s), never blocking other groups."""
    failures = delivery.group.failures + 1
    delay_s = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (failures - 1))
    return replace(delivery.group, failures=failures, next_attempt_ms=now_ms + int(delay_s * 1000))


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def webhook_body(
    delivery: Delivery, external_url: str = "", generator_of: Callable[[Alert], str] | None = None
) -> dict[str, Any]:
    """Alertmanager's webhook payload, version 4; `generator_of` gives each alert's generatorURL."""
    alerts = [
        {
            "status": "firing" if a.state is State.FIRING else "resolved",
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": rfc3339(a.fired_at_ms or a.active_since_ms),
            "endsAt": rfc3339(a.resolved_at_ms if a.state is State.RESOLVED else None),
            "generatorURL": generator_of(a) if generator_of is not None else external_url,
            "fingerprint": a.fingerprint,
        }
        for a in delivery.alerts
    ]
    return {
        "version": "4",
        "groupKey": delivery.group.group_key,
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": delivery.group.receiver,
        "groupLabels": delivery.group.group_labels,
        "commonLabels": _common([a.labels for a in delivery.alerts]),
        "commonAnnotations": _common([a.annotations for a in delivery.alerts]),
        "externalURL": external_url,
        "alerts": alerts,
    }
