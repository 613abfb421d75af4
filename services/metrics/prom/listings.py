"""What the Prometheus API lists besides query answers: series, label names and values (narrowed
to a window), metadata by family, head-style cardinality, and the agents' scrape targets."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.common.selectors import METRIC_NAME, Matcher, MatchType
from services.metrics.domain import LabelSet, Series
from services.metrics.query.promql.evaluator import Evaluator
from services.metrics.query.use_cases import QueryContext


@dataclass(frozen=True)
class Window:
    """The time range a listing (series, labels, label values) is narrowed to, in milliseconds."""

    start_ms: int
    end_ms: int


ALL_TIME = Window(-(2**62), 2**62)


def _rfc3339(at_ms: int) -> str:
    if not at_ms:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Listings:
    """Built per request, like the evaluator whose selection it shares."""

    def __init__(self, ctx: QueryContext, lookback_ms: int) -> None:
        self._ctx = ctx
        self._selection = Evaluator(ctx, lookback_ms)

    def series(self, selectors: Sequence[str], window: Window | None = None) -> list[LabelSet]:
        """The label sets the selectors match (every series without selectors); with a window,
        only those with data in it."""
        chosen: list[Series]
        if selectors:
            chosen = self._selection.selected(selectors)
        else:
            self._ctx.catalog.refresh()
            chosen = self._ctx.catalog.select([])
        if window is not None:
            inside = self._ctx.store.series_with_samples([s.series_id for s in chosen], window.start_ms, window.end_ms)
            chosen = [series for series in chosen if series.series_id in inside]
        return sorted(series.labels for series in chosen)

    def label_names(self, selectors: Sequence[str], window: Window | None = None) -> list[str]:
        if not selectors and window is None:
            self._ctx.catalog.refresh()
            return self._ctx.catalog.label_names()
        return sorted({name for labels in self.series(selectors, window) for name, _ in labels})

    def label_values(self, name: str, selectors: Sequence[str], window: Window | None = None) -> list[str]:
        if not selectors and window is None:
            self._ctx.catalog.refresh()
            return self._ctx.catalog.label_values(name)
        return sorted({value for labels in self.series(selectors, window) for label, value in labels if label == name})

    def metadata(self, metric: str = "", limit: int = 0, limit_per_metric: int = 0) -> dict[str, list[dict[str, str]]]:
        """Metric families' metadata as Prometheus answers /api/v1/metadata: by family name, the
        type as declared (counter, gauge, histogram, summary, ...), help and unit."""
        self._ctx.catalog.refresh()
        answer: dict[str, list[dict[str, str]]] = {}
        for family in self._ctx.catalog.families():
            if metric and family.name != metric:
                continue
            if limit and len(answer) >= limit:
                break
            entries = [{"type": family.type, "help": family.help, "unit": family.unit}]
            answer[family.name] = entries[:limit_per_metric] if limit_per_metric else entries
        return answer

    def tsdb_status(self, top: int = 10) -> dict[str, Any]:
        """Head-style cardinality statistics (Prometheus' /api/v1/status/tsdb): the page an SRE
        opens when cardinality explodes."""
        self._ctx.catalog.refresh()
        stats = self._ctx.catalog.cardinality()

        def ranked(counts: dict[Any, int], name: Callable[[Any], str]) -> list[dict[str, Any]]:
            best = sorted(counts.items(), key=lambda item: (-item[1], name(item[0])))[:top]
            return [{"name": name(key), "value": value} for key, value in best]

        return {
            "headStats": {
                "numSeries": stats.series,
                "numLabelPairs": len(stats.series_by_pair),
                "chunkCount": 0,
                "minTime": 0,
                "maxTime": 0,
            },
            "seriesCountByMetricName": ranked(stats.series_by_metric, str),
            "labelValueCountByLabelName": ranked(stats.values_by_label, str),
            "memoryInBytesByLabelName": ranked(stats.bytes_by_label, str),
            "seriesCountByLabelValuePair": ranked(stats.series_by_pair, lambda pair: f"{pair[0]}={pair[1]}"),
        }

    def targets(self) -> dict[str, Any]:
        """What InfraWatch agents scrape, from the `up` and `scrape_duration_seconds` series they
        write for each target (the error text stays in the agent's log)."""
        self._ctx.catalog.refresh()
        ups = [s for s in self._ctx.catalog.select([Matcher(METRIC_NAME, MatchType.EQUAL, "up")]) if not s.by_writer]
        durations = {
            tuple(p for p in s.labels if p[0] != METRIC_NAME): s.series_id
            for s in self._ctx.catalog.select([Matcher(METRIC_NAME, MatchType.EQUAL, "scrape_duration_seconds")])
            if not s.by_writer
        }
        wanted = [s.series_id for s in ups] + list(durations.values())
        latest = self._ctx.store.latest(wanted)
        active: list[dict[str, Any]] = []
        for series in ups:
            labels = dict(series.labels)
            labels.pop(METRIC_NAME, None)
            at, value = latest.get(series.series_id, (0, math.nan))
            duration = latest.get(durations.get(tuple(p for p in series.labels if p[0] != METRIC_NAME), -1), (0, 0.0))
            healthy = value == 1.0
            failed = f"the last scrape failed (its error is in the log of the InfraWatch agent on {labels.get('host')})"
            active.append(
                {
                    "discoveredLabels": labels,
                    "labels": labels,
                    "scrapePool": labels.get("job", ""),
                    "scrapeUrl": labels.get("instance", ""),
                    "globalUrl": labels.get("instance", ""),
                    "lastError": "" if healthy else failed,
                    "lastScrape": _rfc3339(at),
                    "lastScrapeDuration": duration[1],
                    "health": "up" if healthy else ("down" if at else "unknown"),
                    "scrapeInterval": "",
                    "scrapeTimeout": "",
                }
            )
        active.sort(key=lambda target: (target["scrapePool"], target["scrapeUrl"], target["labels"].get("host", "")))
        return {"activeTargets": active, "droppedTargets": []}
