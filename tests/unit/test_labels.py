"""One label vocabulary: every context accepts and refuses the same names."""

from __future__ import annotations

import pytest

from services.agents.domain import validate_labels
from services.common.errors import InvalidArgument
from services.common.labels import is_label_name, is_metric_name
from services.common.selectors import Matcher, MatchType
from services.metrics.domain import label_set_problem

GOOD_LABELS = ["job", "_x", "a1", "__name__", "A_B"]
BAD_LABELS = ["", "1a", "a-b", "a:b", "a b", "job\n", "é"]


def test_label_and_metric_names_follow_prometheus_rules_whole():
    assert all(is_label_name(name) for name in GOOD_LABELS)
    assert not any(is_label_name(name) for name in BAD_LABELS)
    assert is_metric_name("job:rate5m") and is_metric_name("up")
    assert not is_metric_name("up\n") and not is_metric_name("5xx") and not is_metric_name("")


@pytest.mark.parametrize("name", GOOD_LABELS[:3] + BAD_LABELS[1:])
def test_every_context_agrees_on_a_label_name(name: str):
    valid = is_label_name(name)
    stored = label_set_problem(tuple(sorted({"__name__": "up", name: "v"}.items()))) is None
    try:
        Matcher(name, MatchType.EQUAL, "v")
        matchable = True
    except InvalidArgument:
        matchable = False
    try:
        validate_labels({name: "v"})
        inventory = True
    except InvalidArgument:
        inventory = False
    assert stored == matchable == inventory == valid, (name, stored, matchable, inventory)
