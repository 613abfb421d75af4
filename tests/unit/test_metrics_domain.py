import pytest

from services.common.errors import InvalidArgument
from services.common.selectors import Matcher, MatchType, parse_selector
from services.metrics.domain import Reason, canonical, label_set_problem


def test_selector_with_name_and_every_operator_parses():
    matchers = parse_selector('cpu_usage_percent{host="web-1", role!="db", env=~"prod|stage", dc!~\'eu-.*\'}')
    assert matchers == [
        Matcher("__name__", MatchType.EQUAL, "cpu_usage_percent"),
        Matcher("host", MatchType.EQUAL, "web-1"),
        Matcher("role", MatchType.NOT_EQUAL, "db"),
        Matcher("env", MatchType.REGEX, "prod|stage"),
        Matcher("dc", MatchType.NOT_REGEX, "eu-.*"),
    ]


def test_selector_without_name_and_with_escaped_quotes_parses():
    assert parse_selector(r'{path="a\"b", __name__=~"disk_.*"}') == [
        Matcher("path", MatchType.EQUAL, 'a"b'),
        Matcher("__name__", MatchType.REGEX, "disk_.*"),
    ]


def test_bare_metric_name_is_a_selector():
    assert parse_selector("  up ") == [Matcher("__name__", MatchType.EQUAL, "up")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('cpu{host="a"', "missing '}'"),
        ('cpu{host"a"}', 'expected label="value"'),
        ('cpu{host="a"} extra', "unexpected text"),
        ('cpu{host="a"} #', "unexpected character"),
        ("cpu{host=a}", 'expected label="value"'),
        ('cpu{host=~"("}', "invalid regular expression"),
        ('cpu host="a"', "expected '{'"),
    ],
)
def test_malformed_selectors_are_invalid_arguments_that_say_why(text, message):
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        parse_selector(text)


def test_regex_matchers_are_fully_anchored_and_missing_labels_are_empty():
    assert Matcher("host", MatchType.REGEX, "web").matches("web")
    assert not Matcher("host", MatchType.REGEX, "web").matches("web-1")
    assert Matcher("host", MatchType.NOT_REGEX, "web").matches("web-1")
    assert Matcher("role", MatchType.EQUAL, "").matches("")


def test_canonical_label_sets_are_sorted_and_last_value_wins():
    assert canonical([("b", "1"), ("a", "2"), ("b", "3")]) == (("a", "2"), ("b", "3"))


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ((("host", "a"),), Reason.EMPTY_METRIC_NAME),
        ((("__name__", ""),), Reason.EMPTY_METRIC_NAME),
        ((("__name__", "9lives"),), Reason.INVALID_LABELS),
        ((("__name__", "ok"), ("bad-name", "x")), Reason.INVALID_LABELS),
        ((("__name__", "ok"), ("host", "x" * 1025)), Reason.INVALID_LABELS),
        (tuple(sorted({"__name__": "ok", **{f"l{i}": "v" for i in range(40)}}.items())), Reason.INVALID_LABELS),
    ],
)
def test_label_set_problems_name_the_rule(labels, reason):
    problem = label_set_problem(labels)
    assert problem is not None and problem[0] is reason and problem[1]


def test_a_good_label_set_has_no_problem():
    assert label_set_problem((("__name__", "node:cpu_seconds_total"), ("cpu", "0"), ("mode", "idle"))) is None


def test_label_json_is_exactly_what_json_dumps_gives_so_series_hashes_never_change():
    import json
    import random

    from services.metrics.domain import labels_json

    rng = random.Random(3)
    alphabet = 'ab"\\\n\t/é€😀\x00\x1f<>'
    for _ in range(500):
        labels = canonical(
            (f"l{rng.randrange(10)}", "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12))))
            for _ in range(rng.randrange(1, 6))
        )
        assert labels_json(labels) == json.dumps(dict(labels), separators=(",", ":"), ensure_ascii=False)


def test_a_label_value_with_a_nul_character_is_rejected_per_series():
    from services.metrics.domain import Reason, label_set_problem

    problem = label_set_problem((("__name__", "up"), ("job", "a\x00b")))
    assert problem is not None and problem[0] is Reason.INVALID_LABELS and "NUL" in problem[1]


def test_the_embedded_stores_and_their_directory_are_readable_by_their_owner_only(tmp_path):
    import stat

    from services.common.db import database_url

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    url = database_url("", str(data), "metrics")
    assert url.endswith("/data/metrics.db")
    assert stat.S_IMODE((data / "metrics.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700  # an older, wider directory is narrowed
    assert database_url("postgresql://x/y", str(data), "metrics") == "postgresql://x/y"
