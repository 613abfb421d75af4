"""SQLAlchemy Core implementation of the alerts store (SQLite and PostgreSQL alike)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from services.alerts.domain import Alert, Silence, State
from services.alerts.notify import GroupState
from services.alerts.tables import alerts, notification_groups, silences
from services.common.selectors import Matcher, MatchType


def _alert_row(alert: Alert) -> dict[str, Any]:
    return {
        "fingerprint": alert.fingerprint,
        "rule": alert.rule,
        "state": alert.state.value,
        "labels_json": json.dumps(alert.labels, sort_keys=True),
        "annotations_json": json.dumps(alert.annotations, sort_keys=True),
        "value": repr(alert.value),
        "active_since_ms": alert.active_since_ms,
        "fired_at_ms": alert.fired_at_ms,
        "resolved_at_ms": alert.resolved_at_ms,
        "keep_firing_since_ms": alert.keep_firing_since_ms,
    }


def _alert(row: Any) -> Alert:
    return Alert(
        fingerprint=row.fingerprint,
        rule=row.rule,
        state=State(row.state),
        labels=json.loads(row.labels_json),
        annotations=json.loads(row.annotations_json),
        value=float(row.value),
        active_since_ms=row.active_since_ms,
        fired_at_ms=row.fired_at_ms,
        resolved_at_ms=row.resolved_at_ms,
        keep_firing_since_ms=row.keep_firing_since_ms,
    )


def matchers_json(matchers: tuple[Matcher, ...]) -> str:
    return json.dumps([[m.name, m.type.value, m.value] for m in matchers])


def _silence(row: Any) -> Silence:
    return Silence(
        silence_id=row.silence_id,
        matchers=tuple(Matcher(name, MatchType(kind), value) for name, kind, value in json.loads(row.matchers_json)),
        starts_at_ms=row.starts_at_ms,
        ends_at_ms=row.ends_at_ms,
        author=row.author,
        comment=row.comment,
        created_at_ms=row.created_at_ms,
    )


def _group_row(group: GroupState) -> dict[str, Any]:
    return {
        "group_key": group.group_key,
        "receiver": group.receiver,
        "group_labels_json": json.dumps(group.group_labels, sort_keys=True),
        "first_seen_ms": group.first_seen_ms,
        "last_sent_ms": group.last_sent_ms,
        "notified_json": json.dumps(group.notified, sort_keys=True),
        "failures": group.failures,
        "next_attempt_ms": group.next_attempt_ms,
    }


class SqlAlertStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load_alerts(self) -> list[Alert]:
        with self._engine.connect() as connection:
            return [_alert(row) for row in connection.execute(select(alerts))]

    def replace_alerts(self, rule: str, items: list[Alert]) -> None:
        with self._engine.begin() as connection:
            connection.execute(delete(alerts).where(alerts.c.rule == rule))
            if items:
                connection.execute(insert(alerts), [_alert_row(alert) for alert in items])

    def drop_rules_except(self, rules: set[str]) -> None:
        with self._engine.begin() as connection:
            connection.execute(delete(alerts).where(alerts.c.rule.not_in(rules)))

    def add_silence(self, silence: Silence) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                insert(silences).values(
                    silence_id=silence.silence_id,
                    matchers_json=matchers_json(silence.matchers),
                    starts_at_ms=silence.starts_at_ms,
                    ends_at_ms=silence.ends_at_ms,
                    author=silence.author,
                    comment=silence.comment,
                    created_at_ms=silence.created_at_ms,
                )
            )

    def silences(self, ended_after_ms: int) -> list[Silence]:
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(silences).where(silences.c.ends_at_ms > ended_after_ms).order_by(silences.c.created_at_ms)
            )
            return [_silence(row) for row in rows]

    def update_silence(self, silence: Silence) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                update(silences)
                .where(silences.c.silence_id == silence.silence_id)
                .values(ends_at_ms=silence.ends_at_ms, starts_at_ms=silence.starts_at_ms)
            )

    def load_groups(self) -> list[GroupState]:
        with self._engine.connect() as connection:
            return [
                GroupState(
                    group_key=row.group_key,
                    receiver=row.receiver,
                    group_labels=json.loads(row.group_labels_json),
                    first_seen_ms=row.first_seen_ms,
                    last_sent_ms=row.last_sent_ms,
                    notified=json.loads(row.notified_json),
                    failures=row.failures,
                    next_attempt_ms=row.next_attempt_ms,
                )
                for row in connection.execute(select(notification_groups))
            ]

    def save_group(self, group: GroupState) -> None:
        with self._engine.begin() as connection:
            connection.execute(delete(notification_groups).where(notification_groups.c.group_key == group.group_key))
            connection.execute(insert(notification_groups).values(_group_row(group)))

    def delete_group(self, group_key: str) -> None:
        with self._engine.begin() as connection:
            connection.execute(delete(notification_groups).where(notification_groups.c.group_key == group_key))
