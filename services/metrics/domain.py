"""Series, label sets, matchers and ingest limits, free of transport and storage concerns."""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.common.labels import (
    LABEL_NAME_RULE,
    METRIC_NAME,
    METRIC_NAME_RULE,
    LabelSet,
    is_label_name,
    is_metric_name,
)
from services.common.text import NUL_RULE, holds_nul

HOST_LABEL = "host"
"""Set by the metrics service from the authenticated agent on every series an agent writes."""
MAX_LABEL_NAME = 128
MAX_LABEL_VALUE = 1024
MAX_LABELS = 32
MAX_LABEL_SET_BYTES = MAX_LABELS * (MAX_LABEL_NAME + 4 * MAX_LABEL_VALUE + 8)
"""The longest encoded label set that could pass the limits above (UTF-8: up to 4 bytes a character,
a few bytes of framing per label): anything longer is refused without being parsed."""
MAX_UNIT = 64
MAX_HELP = 1024


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
    FOREIGN_SERIES = 12


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
    """Per-batch, per-sender and per-sample limits of ingest."""

    max_series_per_batch: int = 20_000
    max_series_per_agent: int = 50_000
    max_series_per_writer: int = 250_000
    max_series_total: int = 1_000_000
    max_samples_per_write: int = 500_000
    future_skew_ms: int = 10 * 60 * 1000
    retention_ms: int = 15 * 86_400 * 1000


@dataclass(frozen=True)
class MetricInfo:
    name: str
    type: MetricType
    unit: str = ""
    help: str = ""


PROM_FAMILY_TYPES = ("unknown", "counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset")
"""Prometheus' metric family types, in the order of remote-write's MetricMetadata.Type."""


@dataclass(frozen=True)
class FamilyInfo:
    """A metric family's metadata as a Prometheus sender declares it: descriptive only (samples
    are stored whatever it says). `type` is one of PROM_FAMILY_TYPES."""

    name: str
    type: str
    unit: str = ""
    help: str = ""


@dataclass(frozen=True)
class InvalidMetadata:
    """Metadata a stream sent for `name` that cannot be stored, and why."""

    name: str
    problem: str


@dataclass(frozen=True)
class Series:
    """A stored series: its id, canonical label set and owner: the agent (or remote-write
    credential, `by_writer`) that created it. Only senders of the owner's kind write into it."""

    series_id: int
    labels: LabelSet
    agent_id: str
    by_writer: bool = False


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
    return is_label_name(name) and len(name) <= MAX_LABEL_NAME


@functools.lru_cache(maxsize=4096)
def _valid_metric_name(name: str) -> bool:
    return is_metric_name(name) and len(name) <= MAX_LABEL_NAME


def label_set_problem(labels: LabelSet) -> tuple[Reason, str] | None:
    """Why a label set cannot be stored, or None when it can."""
    names = dict(labels)
    metric_name = names.get(METRIC_NAME, "")
    if not metric_name:
        return Reason.EMPTY_METRIC_NAME, "the __name__ label (metric name) is missing or empty"
    if not _valid_metric_name(metric_name):
        return Reason.INVALID_LABELS, (
            f"metric name {metric_name[:80]!r} is invalid; names match {METRIC_NAME_RULE} "
            f"and are at most {MAX_LABEL_NAME} characters"
        )
    if len(labels) > MAX_LABELS:
        return Reason.INVALID_LABELS, f"{len(labels)} labels; the limit is {MAX_LABELS} per series"
    for name, value in labels:
        if not _valid_label_name(name):
            return Reason.INVALID_LABELS, (
                f"label name {name[:80]!r} is invalid; names match {LABEL_NAME_RULE} "
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
    if not _valid_metric_name(info.name):
        raise InvalidArgument(f"metadata: metric name {info.name[:80]!r} is invalid")
    if len(info.unit) > MAX_UNIT:
        raise InvalidArgument(f"metadata[{info.name}].unit is longer than {MAX_UNIT} characters")
    if len(info.help) > MAX_HELP:
        raise InvalidArgument(f"metadata[{info.name}].help is longer than {MAX_HELP} characters")
    if holds_nul(info.unit) or holds_nul(info.help):
        raise InvalidArgument(f"metadata[{info.name}] {NUL_RULE}")
