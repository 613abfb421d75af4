"""Use cases of the alerts context behind its API: reading alerts and rules, reloading the rules
file, and managing silences."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.logs import event
from services.alerts.dispatch import Dispatcher, silenced_by
from services.alerts.domain import Alert, Silence, State, validate_silence
from services.alerts.engine import AlertEngine
from services.alerts.ports import AlertStore
from services.alerts.rules import RulesError, RuleSet, load_rules
from services.alerts.watch import AlertHub
from services.common.credentials import Credentials
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.selectors import Matcher, label_set_matches, parse_selector

_log = logging.getLogger("infrawatch.alerts")
_STATE_ORDER = {State.FIRING: 0, State.PENDING: 1, State.RESOLVED: 2}
EXPIRED_SILENCES_LISTED_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class AlertsContext:
    engine: AlertEngine
    dispatcher: Dispatcher
    store: AlertStore
    engine_hub: AlertHub
    rules_path: Path
    now_ms: Callable[[], int]
    credentials: Credentials = field(default_factory=Credentials)


def read_rules(path: Path) -> RuleSet:
    """The rules file's rule set; RulesError lists every problem (a missing file is one)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesError([f"{path}: cannot read the rules file: {exc.strerror}"]) from None
    return load_rules(text, str(path))


def matchers_from(text: str) -> list[Matcher]:
    if not text.strip():
        return []
    return parse_selector(text if text.lstrip().startswith("{") else "{" + text + "}")


def list_alerts(ctx: AlertsContext, token: str, states: set[State], matchers: str) -> list[tuple[Alert, list[str]]]:
    ctx.credentials.require_reader(token)
    wanted = states or {State.PENDING, State.FIRING}
    selected = matchers_from(matchers)
    now = ctx.now_ms()
    found = [
        (alert, silenced_by(alert, ctx.dispatcher.silences, now))
        for alert in ctx.engine.alerts()
        if alert.state in wanted and label_set_matches(tuple(alert.labels.items()), selected)
    ]
    return sorted(found, key=lambda item: (_STATE_ORDER[item[0].state], item[0].rule, item[0].fingerprint))


def reload_rules(ctx: AlertsContext, token: str) -> RuleSet:
    """Read the rules file again; an invalid file keeps the running rules and says why."""
    ctx.credentials.require_operator(token)
    return reload_from_file(ctx)


def reload_from_file(ctx: AlertsContext) -> RuleSet:
    try:
        rules = read_rules(ctx.rules_path)
    except RulesError as exc:
        event(_log, "rules reload refused; the previous rules keep running", logging.ERROR, problems=str(exc))
        raise FailedPrecondition("the rules file is invalid; the previous rules keep running:\n" + str(exc)) from None
    ctx.engine.use(rules)
    event(_log, "rules reloaded", file=str(ctx.rules_path), groups=len(rules.groups), rules=len(rules.rules))
    return rules


def create_silence(
    ctx: AlertsContext,
    token: str,
    matchers: list[Matcher],
    starts_at_ms: int | None,
    ends_at_ms: int | None,
    author: str,
    comment: str,
) -> Silence:
    ctx.credentials.require_operator(token)
    now = ctx.now_ms()
    if ends_at_ms is None:
        raise InvalidArgument("ends_at is required: a silence ends")
    silence = Silence(str(uuid.uuid4()), tuple(matchers), starts_at_ms or now, ends_at_ms, author, comment, now)
    validate_silence(silence)
    ctx.store.add_silence(silence)
    ctx.dispatcher.refresh_silences()
    event(_log, "silence created", silence_id=silence.silence_id, author=author, ends_at_ms=ends_at_ms)
    return silence


def list_silences(ctx: AlertsContext, token: str, include_expired: bool) -> list[Silence]:
    ctx.credentials.require_reader(token)
    now = ctx.now_ms()
    since = now - EXPIRED_SILENCES_LISTED_MS if include_expired else now
    return ctx.store.silences(ended_after_ms=since)


def expire_silence(ctx: AlertsContext, token: str, silence_id: str) -> Silence:
    ctx.credentials.require_operator(token)
    now = ctx.now_ms()
    existing = next((s for s in ctx.store.silences(ended_after_ms=0) if s.silence_id == silence_id), None)
    if existing is None:
        raise NotFound(f"no silence has id {silence_id[:64]!r}")
    if existing.status(now) == "expired":
        return existing
    expired = Silence(
        existing.silence_id,
        existing.matchers,
        min(existing.starts_at_ms, now),
        now,
        existing.author,
        existing.comment,
        existing.created_at_ms,
    )
    ctx.store.update_silence(expired)
    ctx.dispatcher.refresh_silences()
    return expired
