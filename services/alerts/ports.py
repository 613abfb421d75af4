"""The seams of the alerts context: its store, and what it asks of the metrics and agents services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.alerts.domain import Alert, Found, Silence
from services.alerts.notify import GroupState
from services.alerts.rules import LivenessCondition, MetricCondition
from services.common.errors import DomainError


class AlertStore(Protocol):
    def load_alerts(self) -> list[Alert]: ...

    def replace_alerts(self, rule: str, alerts: list[Alert]) -> None:
        """The rule's alerts become exactly `alerts`, in one transaction."""
        ...

    def drop_rules_except(self, rules: set[str]) -> None: ...

    def add_silence(self, silence: Silence) -> None: ...

    def silences(self, ended_after_ms: int) -> list[Silence]: ...

    def update_silence(self, silence: Silence) -> None: ...

    def load_groups(self) -> list[GroupState]: ...

    def save_group(self, group: GroupState) -> None: ...

    def delete_group(self, group_key: str) -> None: ...


@dataclass(frozen=True)
class WrittenSeries:
    """One sample the rules write: a recording rule's result, an ALERTS series, an agent's liveness."""

    labels: dict[str, str]  # with __name__
    value: float
    help: str = ""


@dataclass(frozen=True)
class AgentLiveness:
    hostname: str
    labels: dict[str, str]
    online: bool
    heartbeat_at_ms: int


class MetricsSource(Protocol):
    def metric_names(self) -> set[str]: ...

    def instant_query(self, expr: str, at_ms: int) -> list[Found]:
        """The PromQL expression's samples at `at_ms` (a scalar: one sample without labels);
        InvalidArgument for a bad expression, Unavailable when the metrics service cannot answer."""
        ...

    def instant_queries(self, exprs: list[str], at_ms: int) -> list[list[Found] | DomainError]:
        """instant_query of each expression in one call: each its answer or its own error;
        Unavailable (raised) when the metrics service cannot answer at all."""
        ...

    def write(self, series: list[WrittenSeries], at_ms: int) -> None:
        """Store one sample per series at `at_ms`, through the ingest path; returns once committed."""
        ...

    def evaluate(self, condition: MetricCondition, now_ms: int) -> list[Found]:
        """The label sets (of condition.group_by) for which the condition holds now; raises
        Unavailable when the metrics service cannot answer."""
        ...


class LivenessSource(Protocol):
    def evaluate(self, condition: LivenessCondition, now_ms: int) -> list[Found]: ...

    def liveness(self) -> list[AgentLiveness]:
        """Every registered agent's liveness; Unavailable when the agents service cannot answer."""
        ...
