"""The series catalog narrows a selection by its postings (equality, literal lists, regexes over a
label's distinct values) and answers exactly what checking every series would."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from services.common.patterns import literal_alternatives
from services.common.selectors import label_set_matches, parse_selector
from services.metrics.domain import canonical
from services.metrics.storage.catalog import SeriesCatalog
from tests.unit.fakes import FakeSeriesStore


def test_literal_alternatives_are_recognised_only_when_the_pattern_is_nothing_else():
    hosts = ["host-0001", "db.prod", "a+b", "web_9"]
    assert literal_alternatives("|".join(re.escape(h) for h in hosts)) == hosts
    assert literal_alternatives("cpu_usage_percent") == ["cpu_usage_percent"]
    for pattern in ("a.*", "a|b+", r"\d+", "(a|b)", "[ab]", r"\x41", "a{2}", "^a", "a$", "a\\"):
        assert literal_alternatives(pattern) is None, pattern


def catalog_of(hosts: int) -> tuple[SeriesCatalog, list]:
    catalog = SeriesCatalog(FakeSeriesStore(), lambda: 0, refresh_every_s=0)
    catalog.refresh(force=True)
    labels = [
        canonical([("__name__", name), ("host", f"h{n}"), *([("role", "db")] if n % 3 == 0 else [])])
        for n in range(hosts)
        for name in ("cpu", "mem", "load")
    ]
    catalog.create("agent", labels, limit=len(labels))
    return catalog, labels


SELECTORS = st.sampled_from(
    [
        '{__name__=~"cpu|mem", host=~"h1|h2|h30|nope"}',
        '{__name__=~"c.*", role="db"}',
        '{host=~"h1.*", role!="db"}',
        '{__name__="load", role=~"db|"}',  # matches the empty string: series without role too
        '{host=~"h2|h3", __name__!~"cpu"}',
        '{role=~"d.", __name__=~"mem|load"}',
        '{host=~"", __name__="cpu"}',
        '{__name__=~"cpu|mem|load", host=~"h[0-9]"}',
    ]
)


@given(SELECTORS)
def test_selecting_by_postings_matches_checking_every_series(selector):
    catalog, labels = catalog_of(40)
    matchers = parse_selector(selector)
    every = sorted(label_set for label_set in labels if label_set_matches(label_set, matchers))
    assert [s.labels for s in catalog.select(matchers)] == every
