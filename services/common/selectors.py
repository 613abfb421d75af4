"""Label matchers and the PromQL-style selector language (`name{label="v", other=~"re"}`),
shared by every context that selects by labels: metrics selects series with them, alerts
selects alerts and silences with them. Patterns are RE2 (services/common/patterns.py)."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.common.labels import METRIC_NAME, METRIC_NAME_RULE, LabelSet, is_label_name
from services.common.patterns import compile_pattern


class MatchType(enum.IntEnum):
    EQUAL = 0
    NOT_EQUAL = 1
    REGEX = 2
    NOT_REGEX = 3


_OPERATORS = {"=": MatchType.EQUAL, "!=": MatchType.NOT_EQUAL, "=~": MatchType.REGEX, "!~": MatchType.NOT_REGEX}


@dataclass(frozen=True)
class Matcher:
    """One label matcher; a label the series lacks counts as the empty string (as in Prometheus)."""

    name: str
    type: MatchType
    value: str

    def __post_init__(self) -> None:
        if not is_label_name(self.name):
            raise InvalidArgument(f"matcher label name {self.name[:80]!r} is invalid")
        if self.type in (MatchType.REGEX, MatchType.NOT_REGEX):
            object.__setattr__(self, "_pattern", compile_pattern(self.value, f"matcher {self.name}"))

    def matches(self, value: str) -> bool:
        if self.type is MatchType.EQUAL:
            return value == self.value
        if self.type is MatchType.NOT_EQUAL:
            return value != self.value
        found = self._pattern.fullmatch(value) is not None  # type: ignore[attr-defined]
        return found if self.type is MatchType.REGEX else not found


_SELECTOR_TOKEN = re.compile(
    r"""(?:
        (?P<ident>"""
    + METRIC_NAME_RULE
    + r""")
      | (?P<op>=~|!~|!=|=)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<punct>[{},])
    )""",
    re.X,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        match = _SELECTOR_TOKEN.match(text, position)
        if not match:
            raise InvalidArgument(f"selector: unexpected character at position {position}: {text[position:][:20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), literal[1:-1])


MAX_SELECTOR_CHARS = 131_072
"""Room for the gateway's own selector over a page of 1,000 hostnames; checked before parsing."""


def _shown(text: str) -> str:
    """A selector as quoted in an error message: never more than 120 characters of it."""
    return repr(text) if len(text) <= 120 else f"{text[:120]!r}… ({len(text)} characters)"


def parse_selector(text: str) -> list[Matcher]:
    """Parse a PromQL series selector: `name`, `name{l="v",...}` or `{l=~"re",...}`."""
    if len(text) > MAX_SELECTOR_CHARS:
        raise InvalidArgument(f"selector is {len(text)} characters long; the limit is {MAX_SELECTOR_CHARS}")
    tokens = _tokens(text)
    matchers: list[Matcher] = []
    position = 0
    if position < len(tokens) and tokens[position][0] == "ident":
        matchers.append(Matcher(METRIC_NAME, MatchType.EQUAL, tokens[position][1]))
        position += 1
    if position < len(tokens):
        if tokens[position] != ("punct", "{"):
            raise InvalidArgument(f"selector: expected '{{' after the metric name in {_shown(text)}")
        position += 1
        while position < len(tokens) and tokens[position] != ("punct", "}"):
            triple = tokens[position : position + 3]
            if len(triple) < 3 or [kind for kind, _ in triple] != ["ident", "op", "string"]:
                raise InvalidArgument(f'selector: expected label="value" in {_shown(text)}')
            (_, name), (_, op), (_, value) = triple
            matchers.append(Matcher(name, _OPERATORS[op], _unquote(value)))
            position += 3
            if position < len(tokens) and tokens[position] == ("punct", ","):
                position += 1
        if position >= len(tokens):
            raise InvalidArgument(f"selector: missing '}}' in {_shown(text)}")
        position += 1
    if position != len(tokens):
        raise InvalidArgument(f"selector: unexpected text after '}}' in {_shown(text)}")
    return matchers


def label_set_matches(labels: LabelSet, matchers: Sequence[Matcher]) -> bool:
    values = dict(labels)
    return all(m.matches(values.get(m.name, "")) for m in matchers)
