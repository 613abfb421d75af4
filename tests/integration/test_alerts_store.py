"""The alerts store on both databases: what the engine persists comes back as it was."""

from __future__ import annotations

from services.alerts.__main__ import MIGRATIONS, VERSION_TABLE
from services.alerts.domain import Alert, State
from services.alerts.store import SqlAlertStore
from services.common.db import migrate


def test_alerts_with_long_rule_keys_and_keep_firing_state_come_back_as_stored(agents_engine):
    migrate(agents_engine, MIGRATIONS, VERSION_TABLE)
    store = SqlAlertStore(agents_engine)
    key = "A" * 300 + "@group#2"  # Prometheus alert names have no length limit; a shared name adds its place
    alert = Alert(
        "0123456789abcdef",
        key,
        State.FIRING,
        {"alertname": "A" * 300},
        {"summary": "s"},
        float("nan"),
        1_000,
        fired_at_ms=2_000,
        keep_firing_since_ms=3_000,
    )
    store.replace_alerts(key, [alert])
    (loaded,) = store.load_alerts()
    assert (loaded.rule, loaded.keep_firing_since_ms, loaded.fired_at_ms) == (key, 3_000, 2_000)
    assert loaded.value != loaded.value  # NaN survives
    store.drop_rules_except(set())
    assert store.load_alerts() == []
