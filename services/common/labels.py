"""The label vocabulary every context shares (Prometheus' data model): the label that carries the
metric name, a label set's canonical shape, and which names are valid. One place, so a name
valid in one context is valid in every other."""

from __future__ import annotations

import re

METRIC_NAME = "__name__"
"""The label that carries a series' metric name."""

LabelSet = tuple[tuple[str, str], ...]
"""A label set in canonical form: (name, value) pairs sorted by name, `__name__` included."""

LABEL_NAME_RULE = "[a-zA-Z_][a-zA-Z0-9_]*"
"""What a label name matches, as messages say it."""
METRIC_NAME_RULE = "[a-zA-Z_:][a-zA-Z0-9_:]*"
"""What a metric name matches (label names plus ':', for recording rules)."""

_LABEL_NAME = re.compile(LABEL_NAME_RULE)
_METRIC_NAME = re.compile(METRIC_NAME_RULE)


def is_label_name(name: str) -> bool:
    """Whether `name` is a valid label name, the whole of it (a trailing newline is not)."""
    return _LABEL_NAME.fullmatch(name) is not None


def is_metric_name(name: str) -> bool:
    return _METRIC_NAME.fullmatch(name) is not None
