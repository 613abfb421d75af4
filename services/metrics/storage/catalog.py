"""The in-memory series catalog: label set ↔ series id, an inverted index for matchers,
per-agent cardinality and metric types.

Ingest resolves label sets here without touching the database once a series
is known, and queries select series here (as Prometheus' head index does)
before asking the store for samples. The database stays the source of truth:
new series are written there first, and `refresh` picks up series created by
other replicas.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from services.metrics.domain import (
    METRIC_NAME,
    LabelSet,
    Matcher,
    MatchType,
    MetricInfo,
    MetricType,
    Series,
    label_set_matches,
)
from services.metrics.storage.ports import SeriesStore

REFRESH_OVERLAP_IDS = 1000
"""Re-read this many ids below the highest known one, so ids that another replica
allocated earlier but committed later are not missed."""


class SeriesCatalog:
    def __init__(self, store: SeriesStore, now_ms: Callable[[], int], refresh_every_s: float = 1.0) -> None:
        self._store = store
        self._now_ms = now_ms
        self._refresh_every_s = refresh_every_s
        self._lock = threading.RLock()
        self._by_id: dict[int, Series] = {}
        self._by_labels: dict[LabelSet, int] = {}
        self._postings: dict[tuple[str, str], set[int]] = defaultdict(set)
        self._per_agent: Counter[str] = Counter()
        self._infos: dict[str, MetricInfo] = {}
        self._max_id = 0
        self._refreshed_at = 0.0

    def _index(self, series: Series) -> None:
        if series.series_id in self._by_id:
            return
        self._by_id[series.series_id] = series
        self._by_labels[series.labels] = series.series_id
        for pair in series.labels:
            self._postings[pair].add(series.series_id)
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
        with self._lock:
            for series in loaded:
                self._index(series)
            for info in infos:
                self._infos[info.name] = info

    def series_id(self, labels: LabelSet) -> int | None:
        return self._by_labels.get(labels)

    def get(self, series_id: int) -> Series:
        return self._by_id[series_id]

    def series_count(self) -> int:
        return len(self._by_id)

    def metric_info(self, name: str) -> MetricInfo | None:
        return self._infos.get(name)

    def metric_infos(self) -> list[MetricInfo]:
        with self._lock:
            return sorted(self._infos.values(), key=lambda info: info.name)

    def declare(self, info: MetricInfo) -> MetricInfo:
        """Record metadata for a name; returns what is stored (the first type a name got wins)."""
        with self._lock:
            known = self._infos.get(info.name)
            if known is not None and (known.unit, known.help) == (info.unit, info.help):
                return known
            stored_type = known.type if known is not None else (info.type or MetricType.GAUGE)
            stored = MetricInfo(info.name, MetricType(stored_type), info.unit, info.help)
            self._store.save_metric_info(stored)
            self._infos[info.name] = stored
            return stored

    def create(
        self, agent_id: str, wanted: Sequence[LabelSet], limit: int, total_limit: int | None = None
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
                f"the agent already has {self._per_agent[agent_id]} series; the limit is {limit} "
                "(INFRAWATCH_MAX_SERIES_PER_AGENT)"
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
            if self.metric_info(name) is None:  # not declared meanwhile, with a unit and help
                self.declare(MetricInfo(name, MetricType.GAUGE))
        created = self._store.create_series([(labels, agent_id) for labels in accepted], self._now_ms())
        with self._lock:
            for labels, series_id in created.items():
                self._index(Series(series_id, labels, agent_id))
                result[labels] = series_id
        return result

    def select(self, matchers: Sequence[Matcher]) -> list[Series]:
        """Series matching every matcher, ordered by label set."""
        with self._lock:
            candidates: set[int] | None = None
            for matcher in matchers:
                if matcher.type is MatchType.EQUAL and matcher.value:
                    posting = self._postings.get((matcher.name, matcher.value), set())
                    candidates = set(posting) if candidates is None else candidates & posting
            pool = self._by_id.values() if candidates is None else (self._by_id[i] for i in candidates)
            chosen = [s for s in pool if label_set_matches(s.labels, matchers)]
        return sorted(chosen, key=lambda s: s.labels)
