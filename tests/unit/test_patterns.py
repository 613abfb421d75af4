"""User-supplied regular expressions: linear-time matching and limits checked before compiling."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.patterns import MAX_NESTING, MAX_PATTERN_CHARS, compile_pattern
from services.common.selectors import Matcher, MatchType, parse_selector


def test_a_pattern_that_backtracks_exponentially_in_python_matches_in_linear_time():
    # With Python's `re` this fullmatch takes about 2**64 steps; the test's timeout would end it.
    matcher = Matcher("tag", MatchType.REGEX, "(a+)+b")
    assert not matcher.matches("a" * 64)
    assert matcher.matches("a" * 64 + "b")


def test_selectors_keep_their_meaning_under_re2():
    (_, env) = parse_selector('cpu{env=~"prod|stage"}')
    assert env.matches("prod") and not env.matches("production")
    assert Matcher("dc", MatchType.NOT_REGEX, "eu-.*").matches("us-1")


def test_lookaround_is_not_supported_and_says_so():
    with pytest.raises(InvalidArgument, match="invalid regular expression"):
        Matcher("host", MatchType.REGEX, "(?=web).*")


def test_patterns_nested_too_deep_are_refused_before_compiling():
    deep = "(" * (MAX_NESTING + 1) + "a" + ")" * (MAX_NESTING + 1)
    with pytest.raises(InvalidArgument, match="nests groups"):
        compile_pattern(deep, "matcher host")
    assert compile_pattern("[(((]" * 100, "matcher host").fullmatch("(" * 100) is not None


def test_patterns_longer_than_the_limit_are_refused():
    with pytest.raises(InvalidArgument, match="characters long"):
        compile_pattern("a" * (MAX_PATTERN_CHARS + 1), "matcher host")
