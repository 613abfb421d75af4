"""Series, label sets, matchers and ingest limits, free of transport and storage concerns."""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.common.patterns import compile_pattern
from services.common.text import NUL_RULE, holds_nul

LabelSet = tuple[tuple[str, str], ...]
"""A label set in canonical form: (name, value) pairs sorted by name, `__name__` included."""

METRIC_NAME = "__name__"
HOST_LABEL = "host"
"""Set by the metrics service from the authenticated agent on every series an agent writes."""
MAX_LABEL_NAME = 128
MAX_LABEL_VALUE = 1024
MAX_LABELS = 32
MAX_UNIT = 64
MAX_HELP = 1024
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class MetricType(enum.IntEnum):
    UNSPECIFIED = 0
    GAUGE = 1
    COUNTER = 2


class Reason(enum.IntEnum):
    """Why samples of a series were not stored; values match RejectionReason in the proto."""

    INVALID_LABELS = 1
    EMPTY_METRIC_NAME = 2
    TYPE_CONFLICT = 3
    CARDINALITY_LIMIT = 4
    TOO_MANY_SERIES = 5
    UNKNOWN_REF = 6
    LENGTH_MISMATCH = 7
    TOO_FAR_IN_FUTURE = 8
    TOO_OLD = 9
    OUT_OF_ORDER = 10
    INVALID_METADATA = 11


class Aggregation(enum.IntEnum):
    NONE = 0
    AVG = 1
    MIN = 2
    MAX = 3
    SUM = 4
    COUNT = 5
    LAST = 6
    RATE = 7


@dataclass(frozen=True)
class IngestLimits:
    """Per-batch, per-agent and per-sample limits of ingest."""

    max_series_per_batch: int = 20_000
    max_series_per_agent: int = 50_000
    max_series_total: int = 1_000_000
    future_skew_ms: int = 10 * 60 * 1000
    retention_ms: int = 15 * 86_400 * 1000


@dataclass(frozen=True)
class MetricInfo:
    name: str
    type: MetricType
    unit: str = ""
    help: str = ""


@dataclass(frozen=True)
class InvalidMetadata:
    """Metadata a stream sent for `name` that cannot be stored, and why."""

    name: str
    problem: str


@dataclass(frozen=True)
class Series:
    """A stored series: its id, canonical label set and owning agent."""

    series_id: int
    labels: LabelSet
    agent_id: str


def canonical(labels: Iterable[tuple[str, str]]) -> LabelSet:
    """Sorted by name; with a repeated name the last value wins."""
    return tuple(sorted(dict(labels).items()))


def labels_json(labels: LabelSet) -> str:
    """The label set as compact JSON, byte for byte what `json.dumps(dict(labels),
    separators=(",", ":"), ensure_ascii=False)` gives (series hashes depend on it), built without
    the encoder's per-call machinery: a fleet starting up creates tens of thousands at once."""
    return "{" + ",".join([_json_string(name) + ":" + _json_string(value) for name, value in labels]) + "}"


_json_string = json.encoder.encode_basestring


def labels_from_json(text: str) -> LabelSet:
    return tuple(sorted(json.loads(text).items()))


@functools.lru_cache(maxsize=4096)
def _valid_label_name(name: str) -> bool:
    """Label names repeat across every series of a fleet: each is checked once."""
    return bool(_LABEL_NAME.match(name)) and len(name) <= MAX_LABEL_NAME


@functools.lru_cache(maxsize=4096)
def _valid_metric_name(name: str) -> bool:
    return bool(_METRIC_NAME.match(name)) and len(name) <= MAX_LABEL_NAME


def label_set_problem(labels: LabelSet) -> tuple[Reason, str] | None:
    """Why a label set cannot be stored, or None when it can."""
    names = dict(labels)
    metric_name = names.get(METRIC_NAME, "")
    if not metric_name:
        return Reason.EMPTY_METRIC_NAME, "the __name__ label (metric name) is missing or empty"
    if not _valid_metric_name(metric_name):
        return Reason.INVALID_LABELS, (
            f"metric name {metric_name[:80]!r} is invalid; names match [a-zA-Z_:][a-zA-Z0-9_:]* "
            f"and are at most {MAX_LABEL_NAME} characters"
        )
    if len(labels) > MAX_LABELS:
        return Reason.INVALID_LABELS, f"{len(labels)} labels; the limit is {MAX_LABELS} per series"
    for name, value in labels:
        if not _valid_label_name(name):
            return Reason.INVALID_LABELS, (
                f"label name {name[:80]!r} is invalid; names match [a-zA-Z_][a-zA-Z0-9_]* "
                f"and are at most {MAX_LABEL_NAME} characters"
            )
        if len(value) > MAX_LABEL_VALUE:
            return Reason.INVALID_LABELS, (
                f"label {name} is {len(value)} characters long; the limit is {MAX_LABEL_VALUE}"
            )
        if holds_nul(value):
            return Reason.INVALID_LABELS, f"label {name} {NUL_RULE}"
    return None


def validate_metric_info(info: MetricInfo) -> None:
    if not info.name or not _METRIC_NAME.match(info.name) or len(info.name) > MAX_LABEL_NAME:
        raise InvalidArgument(f"metadata: metric name {info.name[:80]!r} is invalid")
    if len(info.unit) > MAX_UNIT:
        raise InvalidArgument(f"metadata[{info.name}].unit is longer than {MAX_UNIT} characters")
    if len(info.help) > MAX_HELP:
        raise InvalidArgument(f"metadata[{info.name}].help is longer than {MAX_HELP} characters")
    if holds_nul(info.unit) or holds_nul(info.help):
        raise InvalidArgument(f"metadata[{info.name}] {NUL_RULE}")


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
        if not self.name or not _LABEL_NAME.match(self.name):
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
        (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
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
