"""Alert instances and their life (pending → firing → resolved), and silences. No I/O here."""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace

from services.alerts import templates
from services.alerts.rules import Rule
from services.common.errors import InvalidArgument
from services.common.selectors import Matcher
from services.common.text import NUL_RULE, holds_nul

ALERTNAME = "alertname"
RESOLVED_KEPT_MS = 15 * 60 * 1000
"""How long a resolved alert stays listed (and can still be notified as resolved)."""
MAX_SILENCE_AUTHOR = 256
MAX_SILENCE_COMMENT = 1024
MAX_SILENCE_MATCHERS = 32


class State(enum.Enum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


def fingerprint(labels: dict[str, str]) -> str:
    """A stable 16-hex-digit hash of a label set, the alert's identity across evaluations."""
    canonical = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    fingerprint: str
    rule: str
    state: State
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float
    active_since_ms: int
    fired_at_ms: int | None = None
    resolved_at_ms: int | None = None
    keep_firing_since_ms: int | None = None
    """When the condition stopped holding for an alert that keeps firing (`keep_firing_for`)."""


@dataclass(frozen=True)
class Found:
    """One label set for which a rule's condition holds now, with the value that made it hold."""

    labels: dict[str, str]
    value: float


Expand = Callable[[str, dict[str, str], float], str]
"""Renders one template for a sample's labels and value (templates.render with the service's
external labels, external URL and query function)."""


def plain_expand(template: str, labels: dict[str, str], value: float) -> str:
    """A template rendered with the sample alone (no external labels, no `query`)."""
    return templates.render(template, templates.Context(labels, value)) if "{{" in template else template


def alert_labels(
    rule: Rule, sample_labels: dict[str, str], value: float = 0.0, expand: Expand = plain_expand
) -> dict[str, str]:
    """The sample's labels without `__name__`, then the rule's labels (their templates expanded),
    then alertname: the rule has the last word, as in Prometheus."""
    own = {name: expand(text, sample_labels, value) for name, text in rule.labels}
    kept = {name: text for name, text in sample_labels.items() if name != "__name__"}
    return {**kept, **own, ALERTNAME: rule.name}


class DuplicateLabelSets(ValueError):
    """Two samples of a rule's result have the same labels once the rule's labels are applied."""


def advance(
    rule: Rule, previous: dict[str, Alert], found: list[Found], now_ms: int, expand: Expand = plain_expand
) -> dict[str, Alert]:
    """The rule's alerts after one successful evaluation that found `found` true.

    Condition true: a new alert is pending (firing at once when `for` is 0), a pending one fires
    once it has held for `for`. Condition no longer true: a pending alert is dropped, a firing
    one resolves — or, with `keep_firing_for`, keeps firing until the condition has been false
    that long. Resolved alerts stay for RESOLVED_KEPT_MS, then go. A failed evaluation never
    calls this, so it can neither resolve nor fire anything. Templates in labels and
    annotations see the sample's labels and value, as in Prometheus. Raises DuplicateLabelSets
    when two samples would be one alert."""
    for_ms = int(rule.for_s * 1000)
    keep_ms = int(rule.keep_firing_for_s * 1000)
    result: dict[str, Alert] = {}
    seen: set[str] = set()
    for item in found:
        labels = alert_labels(rule, item.labels, item.value, expand)
        key = fingerprint(labels)
        if key in seen:
            raise DuplicateLabelSets(
                f"the result has two samples with the labels {labels} once the rule's labels are applied"
            )
        seen.add(key)
        annotations = {name: expand(text, item.labels, item.value) for name, text in rule.annotations}
        before = previous.get(key)
        if before is None or before.state is State.RESOLVED:
            before = Alert(key, rule.key, State.PENDING, labels, annotations, item.value, now_ms)
        alert = replace(before, labels=labels, annotations=annotations, value=item.value, keep_firing_since_ms=None)
        if alert.state is State.PENDING and now_ms - alert.active_since_ms >= for_ms:
            alert = replace(alert, state=State.FIRING, fired_at_ms=now_ms)
        result[key] = alert
    for key, before in previous.items():
        if key in seen:
            continue
        if before.state is State.FIRING:
            since = before.keep_firing_since_ms if before.keep_firing_since_ms is not None else now_ms
            if keep_ms and now_ms - since < keep_ms:
                result[key] = replace(before, keep_firing_since_ms=since)
            else:
                result[key] = replace(before, state=State.RESOLVED, resolved_at_ms=now_ms, keep_firing_since_ms=None)
        elif before.state is State.RESOLVED and now_ms - (before.resolved_at_ms or now_ms) < RESOLVED_KEPT_MS:
            result[key] = before
    return result


@dataclass(frozen=True)
class Silence:
    silence_id: str
    matchers: tuple[Matcher, ...]
    starts_at_ms: int
    ends_at_ms: int
    author: str
    comment: str
    created_at_ms: int

    def status(self, now_ms: int) -> str:
        if now_ms < self.starts_at_ms:
            return "pending"
        return "active" if now_ms < self.ends_at_ms else "expired"

    def silences(self, labels: dict[str, str], now_ms: int) -> bool:
        return self.status(now_ms) == "active" and all(m.matches(labels.get(m.name, "")) for m in self.matchers)


def validate_silence(silence: Silence) -> None:
    if not silence.matchers:
        raise InvalidArgument("a silence needs at least one matcher")
    if len(silence.matchers) > MAX_SILENCE_MATCHERS:
        raise InvalidArgument(f"a silence has at most {MAX_SILENCE_MATCHERS} matchers")
    if all(m.matches("") for m in silence.matchers):
        raise InvalidArgument("these matchers match every alert (each matches an empty label); name one label")
    if silence.ends_at_ms <= silence.starts_at_ms:
        raise InvalidArgument("ends_at must be after starts_at")
    for name, text, limit in (
        ("author", silence.author, MAX_SILENCE_AUTHOR),
        ("comment", silence.comment, MAX_SILENCE_COMMENT),
    ):
        if not text.strip():
            raise InvalidArgument(f"{name} is required: say who silences this and why")
        if len(text) > limit:
            raise InvalidArgument(f"{name} is {len(text)} characters long; the limit is {limit}")
        if holds_nul(text):
            raise InvalidArgument(f"{name} {NUL_RULE}")
