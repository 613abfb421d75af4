"""The in-memory series catalog: label set ↔ series id, an inverted index for matchers,
per-agent cardinality and metric types.

Ingest resolves label sets here without touching the database once a series
is known, and queries select series here (as Prometheus' head index does)
before asking the store for samples. The database stays the source of truth:
new series are written there first, and `refresh` picks up series created by
other replicas.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.logs import event
from services.common.patterns import literal_alternatives
from services.common.selectors import Matcher, MatchType, label_set_matches
from services.metrics.domain import METRIC_NAME, FamilyInfo, LabelSet, MetricInfo, MetricType, Series
from services.metrics.storage.ports import SeriesStore

_log = logging.getLogger("infrawatch.metrics.catalog")

REFRESH_OVERLAP_IDS = 1000
"""Re-read this many ids below the highest known one, so ids that another replica
allocated earlier but committed later are not missed."""


@dataclass(frozen=True)
class Cardinality:
    """Series counts by metric name and by label pair, distinct values and bytes by label name."""

    series: int
    series_by_metric: dict[str, int]
    series_by_pair: dict[tuple[str, str], int]
    values_by_label: dict[str, int]
    bytes_by_label: dict[str, int]


@dataclass(frozen=True)
class MetadataConflict:
    """The newest refused declaration of a name, next to what was kept, and how often."""

    kept: MetricInfo
    refused: MetricInfo
    agent_id: str
    times: int


class SeriesCatalog:
    def __init__(
        self,
        store: SeriesStore,
        now_ms: Callable[[], int],
        refresh_every_s: float = 1.0,
        protected: Sequence[MetricInfo] = (),
    ) -> None:
        self._store = store
        self._protected = {info.name: info for info in protected}
        self._conflicts: dict[str, MetadataConflict] = {}
        self._now_ms = now_ms
        self._refresh_every_s = refresh_every_s
        self._lock = threading.RLock()
        self._by_id: dict[int, Series] = {}
        self._by_labels: dict[LabelSet, int] = {}
        self._postings: dict[tuple[str, str], set[int]] = defaultdict(set)
        self._values_of: dict[str, set[str]] = defaultdict(set)  # label name -> its values
        self._per_agent: Counter[str] = Counter()
        self._infos: dict[str, MetricInfo] = {}
        self._families: dict[str, FamilyInfo] = {}
        self._max_id = 0
        self._refreshed_at = 0.0

    def _index(self, series: Series) -> None:
        if series.series_id in self._by_id:
            return
        self._by_id[series.series_id] = series
        self._by_labels[series.labels] = series.series_id
        for pair in series.labels:
            self._postings[pair].add(series.series_id)
            self._values_of[pair[0]].add(pair[1])
        self._per_agent[series.agent_id] += 1
        self._max_id = max(self._max_id, series.series_id)

    def refresh(self, force: bool = False) -> None:
        """Pick up series and metric metadata written by other processes (at most once a second, and
        only when the store's watermark shows something new)."""
        now = time.monotonic()
        if not force and now - self._refreshed_at < self._refresh_every_s:
            return
        self._refreshed_at = now
        if not force and self._store.watermark() == (self._max_id, len(self._by_id), len(self._infos)):
            return
        loaded = self._store.load_series(max(0, self._max_id - REFRESH_OVERLAP_IDS))
        infos = self._store.load_metric_infos()
        families = self._store.load_families()
        with self._lock:
            for series in loaded:
                self._index(series)
            for info in infos:
                self._infos[info.name] = info
            for family in families:
                self._families[family.name] = family

    def series_id(self, labels: LabelSet) -> int | None:
        return self._by_labels.get(labels)

    def get(self, series_id: int) -> Series:
        return self._by_id[series_id]

    def series_count(self) -> int:
        return len(self._by_id)

    def metric_info(self, name: str) -> MetricInfo | None:
        return self._protected.get(name) or self._infos.get(name)

    def metric_infos(self) -> list[MetricInfo]:
        with self._lock:
            # Names in use, with the protected ones as the table defines them (the stored row may
            # predate the protection).
            infos = [self._protected.get(name, info) for name, info in self._infos.items()]
            return sorted(infos, key=lambda info: info.name)

    def declare(self, info: MetricInfo, agent_id: str = "") -> MetricInfo:
        """Record metadata for a name; returns what is kept.

        The first type a name gets wins, and the types of protected names (the InfraWatch agent's
        own metrics) cannot be taken over at all. A name first seen without metadata has no type
        yet (UNSPECIFIED): the first real declaration sets it, so samples that arrive before their
        metadata (Prometheus sends metadata once a minute) cannot lock the real type out. Unit and
        help, once set, are not rewritten by a later sender either: a missing unit or help may be
        filled in, a different one is refused. Every refusal is logged and kept in `conflicts` for
        operators (ListMetricNames); whether the sender's samples are refused too is ingest's rule,
        not this one's."""
        with self._lock:
            protected = self._protected.get(info.name)
            known = protected or self._infos.get(info.name)
            if known is not None and known.type is MetricType.UNSPECIFIED and protected is None:
                known = MetricInfo(info.name, MetricType(info.type), known.unit, known.help)
            if known is None:
                stored = MetricInfo(info.name, MetricType(info.type), info.unit, info.help)
            elif not (
                info.type in (MetricType.UNSPECIFIED, known.type)
                and info.unit in ("", known.unit, *([info.unit] if not known.unit else []))
                and info.help in ("", known.help, *([info.help] if not known.help else []))
            ):
                self._record_conflict(known, info, agent_id)
                stored = known
            elif protected is not None:
                stored = protected
            else:  # a unit or help not set before may be filled in
                stored = MetricInfo(info.name, known.type, known.unit or info.unit, known.help or info.help)
            if self._infos.get(info.name) != stored:
                self._store.save_metric_info(stored)
                self._infos[info.name] = stored
            return stored

    def describe_families(self, families: Sequence[FamilyInfo]) -> None:
        """Record families' metadata as a Prometheus sender declares it. Descriptive, as in
        Prometheus: the latest declaration of a family is what `families` shows; only changes are
        written."""
        with self._lock:
            changed = [family for family in families if self._families.get(family.name) != family]
        if not changed:
            return
        self._store.save_families(changed)
        with self._lock:
            for family in changed:
                self._families[family.name] = family

    def families(self) -> list[FamilyInfo]:
        """Every family's metadata: what remote writers declared, and the other names' types
        (InfraWatch agents' metrics, names declared over gRPC) as families of their own."""
        with self._lock:
            found = dict(self._families)
            covered = {
                family.name + suffix
                for family in found.values()
                for suffix in ("", "_bucket", "_sum", "_count", "_total", "_created", "_info")
            }
            for name, info in self._infos.items():
                kept = self._protected.get(name, info)
                if name not in covered and kept.type is not MetricType.UNSPECIFIED:
                    found[name] = FamilyInfo(name, kept.type.name.lower(), kept.unit, kept.help)
            return sorted(found.values(), key=lambda family: family.name)

    def refused_declarations(self) -> int:
        """Declarations refused since start (telemetry: infrawatch_metadata_refused_declarations)."""
        with self._lock:
            return sum(conflict.times for conflict in self._conflicts.values())

    def _record_conflict(self, kept: MetricInfo, refused: MetricInfo, agent_id: str) -> None:
        previous = self._conflicts.get(refused.name)
        times = previous.times + 1 if previous is not None else 1
        self._conflicts[refused.name] = MetadataConflict(kept, refused, agent_id, times)
        if previous is None or previous.refused != refused:
            event(
                _log,
                "metric metadata refused: the name is already declared otherwise",
                logging.WARNING,
                metric=refused.name,
                kept_type=kept.type.name,
                refused_type=MetricType(refused.type).name,
                agent_id=agent_id,
            )

    def conflicts(self) -> list[MetadataConflict]:
        with self._lock:
            return sorted(self._conflicts.values(), key=lambda conflict: conflict.kept.name)

    def create(
        self,
        agent_id: str,
        wanted: Sequence[LabelSet],
        limit: int,
        total_limit: int | None = None,
        limit_setting: str = "INFRAWATCH_MAX_SERIES_PER_AGENT",
        by_writer: bool = False,
    ) -> dict[LabelSet, int | str]:
        """Ids for label sets new to the catalog, created on behalf of `agent_id`; a string
        explains a label set refused by the per-agent cardinality limit (`limit`) or by the limit
        on series in the whole store (`total_limit`), which keeps a few agents from filling
        memory and disk for everyone.

        The database insert runs outside the catalog lock, so agents creating series at the same
        moment (a fleet starting up) do not queue behind each other; callers serialise the calls
        of one agent (ingest does, with its per-agent lock), which keeps the limit exact."""
        with self._lock:
            result: dict[LabelSet, int | str] = {}
            missing = []
            for labels in dict.fromkeys(wanted):
                known = self._by_labels.get(labels)
                if known is not None:
                    result[labels] = known
                else:
                    missing.append(labels)
            if not missing:
                return result
            agent_room = max(0, limit - self._per_agent[agent_id])
            total_room = agent_room if total_limit is None else max(0, total_limit - len(self._by_id))
            room = min(agent_room, total_room)
            accepted, refused = missing[:room], missing[room:]
            reason = (
                f"the sender already has {self._per_agent[agent_id]} series; the limit is {limit} ({limit_setting})"
                if agent_room <= total_room
                else f"the store already holds {len(self._by_id)} series; the limit is {total_limit} "
                "(INFRAWATCH_MAX_SERIES)"
            )
            for labels in refused:
                result[labels] = reason
            new_names = {dict(labels)[METRIC_NAME] for labels in accepted} - set(self._infos)
        if not accepted:
            return result
        for name in new_names:
            # Never overwrites: a name declared meanwhile keeps its metadata; a protected name
            # enters with its own; a new one has no type until it is declared.
            self.declare(MetricInfo(name, MetricType.UNSPECIFIED), agent_id)
        created = self._store.create_series([(labels, agent_id) for labels in accepted], self._now_ms(), by_writer)
        with self._lock:
            for labels, made in created.items():
                self._index(made)
                result[labels] = made.series_id
        return result

    def label_values(self, name: str) -> list[str]:
        """Every value `name` has on some series, sorted."""
        with self._lock:
            return sorted(self._values_of.get(name, ()))

    def cardinality(self) -> Cardinality:
        """Counted from the postings, one pass over the label pairs (not over the series)."""
        with self._lock:
            by_pair = {pair: len(ids) for pair, ids in self._postings.items() if ids}
        by_metric = {value: count for (name, value), count in by_pair.items() if name == METRIC_NAME}
        values: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for (name, value), count in by_pair.items():
            values[name] += 1
            sizes[name] += len(value.encode()) * count
        return Cardinality(len(self._by_id), by_metric, by_pair, dict(values), dict(sizes))

    def label_names(self) -> list[str]:
        with self._lock:
            return sorted({label for (label, _), ids in self._postings.items() if ids})

    def _narrowed_by(self, matcher: Matcher) -> set[int] | None:
        """The ids of the series `matcher` can match, from the postings; None when it may match
        series that lack its label (it matches the empty string) or says nothing the postings
        know. A regex is matched against the label's distinct values (or, when it is a list of
        literals, looked up), never against every series."""
        if matcher.type is MatchType.EQUAL:
            return self._postings.get((matcher.name, matcher.value), set()) if matcher.value else None
        if matcher.type is not MatchType.REGEX or matcher.matches(""):
            return None
        literals = literal_alternatives(matcher.value)
        if literals is None:
            literals = [value for value in self._values_of.get(matcher.name, ()) if matcher.matches(value)]
        values = literals
        found: set[int] = set()
        for value in values:
            found.update(self._postings.get((matcher.name, value), ()))
        return found

    def select(self, matchers: Sequence[Matcher]) -> list[Series]:
        """Series matching every matcher, ordered by label set (every matcher is still checked on
        each candidate: the postings only narrow)."""
        with self._lock:
            candidates: set[int] | None = None
            for matcher in sorted(matchers, key=lambda m: m.type is not MatchType.EQUAL):
                posting = self._narrowed_by(matcher)
                if posting is not None:
                    candidates = set(posting) if candidates is None else candidates & posting
                if candidates is not None and not candidates:
                    break
            pool = self._by_id.values() if candidates is None else (self._by_id[i] for i in candidates)
            chosen = [s for s in pool if label_set_matches(s.labels, matchers)]
        return sorted(chosen, key=lambda s: s.labels)
