"""Scraping Prometheus endpoints: node_exporter, an application's exporter, InfraWatch's own.

Every `scrape_interval` each target is fetched over HTTP and parsed with prometheus_client's
parser (the Prometheus text format, which exporters serve by default). Its samples become one
self-contained batch in the agent's disk buffer, so they travel on the same no-loss stream as the
host metrics: a metrics outage delays them, never loses them.

Labels follow Prometheus: every sample gets `job` and `instance` (the target's host:port); a
label the target exposes under one of those names, or under `host` (which the metrics service
sets from the agent's credential), is kept as `exported_<name>`. Per target and scrape, like
Prometheus: `up` (1 when the scrape and parse succeeded, else 0), `scrape_duration_seconds` and
`scrape_samples_scraped`. Samples are stamped with the scrape's time. Counter-like samples
(counters, histogram buckets, sums and counts) are declared COUNTER and gauges GAUGE, so the
platform's `rate` treats them as Prometheus does.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from agent.collector import Round, Sample
from infrawatch.metrics.v1 import metrics_pb2 as pb

_log = logging.getLogger("infrawatch.agent.scrape")

MAX_RESPONSE_BYTES = 32 << 20
"""A target answering more than this is reported down rather than read into memory."""
RESERVED = ("job", "instance", "host")
ACCEPT = "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"


@dataclass(frozen=True)
class ScrapeTarget:
    job: str
    url: str

    @property
    def instance(self) -> str:
        return urlsplit(self.url).netloc


def scrape_targets(raw: str) -> tuple[ScrapeTarget, ...]:
    """`job=url[,job=url...]`, e.g. `node=http://localhost:9100/metrics`; empty for none."""
    targets = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        job, sep, url = part.partition("=")
        parsed = urlsplit(url.strip())
        if not sep or not job.strip() or parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{part!r} is not job=http://host:port/path (e.g. node=http://localhost:9100/metrics)")
        targets.append(ScrapeTarget(job.strip(), url.strip()))
    return tuple(targets)


@dataclass
class Scraped:
    """One scrape of one target: the samples, their declared types, and whether it worked."""

    round: Round
    types: dict[str, int] = field(default_factory=dict)
    up: bool = False
    error: str = ""


def _declared_type(family_type: str, sample_name: str, family_name: str) -> int:
    if family_type == "gauge":
        return pb.METRIC_TYPE_GAUGE
    if family_type == "counter":
        return pb.METRIC_TYPE_COUNTER
    if family_type in ("histogram", "gaugehistogram"):
        return pb.METRIC_TYPE_COUNTER if family_type == "histogram" else pb.METRIC_TYPE_GAUGE
    if family_type == "summary":
        return pb.METRIC_TYPE_GAUGE if sample_name == family_name else pb.METRIC_TYPE_COUNTER
    return pb.METRIC_TYPE_UNSPECIFIED


def _target_labels(exposed: dict[str, str], target: ScrapeTarget) -> dict[str, str]:
    labels = {(f"exported_{name}" if name in RESERVED else name): value for name, value in exposed.items()}
    labels["job"] = target.job
    labels["instance"] = target.instance
    return labels


def parse_exposition(text: str, target: ScrapeTarget, round_: Round, types: dict[str, int]) -> int:
    """Add the exposition's samples to `round_` with the target's labels; returns how many."""
    count = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue  # prometheus_client's creation timestamps: not a measurement
            labels = _target_labels(dict(sample.labels), target)
            # Appended directly: exporters use label names such as `name` and `value` freely.
            round_.samples.append(Sample(sample.name, tuple(sorted(labels.items())), float(sample.value)))
            types.setdefault(sample.name, _declared_type(family.type, sample.name, family.name))
            count += 1
    return count


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


def scrape(target: ScrapeTarget, timeout_s: float, now_ms: Callable[[], int] = _wall_clock_ms) -> Scraped:
    """Fetch and parse one target; never raises for what the target does."""
    began = time.monotonic()
    result = Scraped(Round(now_ms()))
    scraped = 0
    try:
        request = urllib.request.Request(target.url, headers={"Accept": ACCEPT, "User-Agent": "infrawatch-agent"})
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            body = reply.read(MAX_RESPONSE_BYTES + 1)
        if len(body) > MAX_RESPONSE_BYTES:
            raise ValueError(f"the answer is larger than {MAX_RESPONSE_BYTES} bytes")
        scraped = parse_exposition(body.decode("utf-8"), target, result.round, result.types)
        result.up = True
    except (urllib.error.URLError, OSError, ValueError, UnicodeDecodeError) as exc:
        result.error = str(getattr(exc, "reason", None) or exc)[:300]
    except Exception as exc:  # a parser surprise must not end the schedule: the target is down
        _log.exception("scrape failed unexpectedly", extra={"fields": {"job": target.job, "url": target.url}})
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    if not result.up:  # nothing half-parsed is sent
        result.round.samples.clear()
        result.types.clear()
    labels = {"job": target.job, "instance": target.instance}
    result.round.add("up", 1.0 if result.up else 0.0, **labels)
    result.round.add("scrape_duration_seconds", time.monotonic() - began, **labels)
    result.round.add("scrape_samples_scraped", float(scraped), **labels)
    for name in ("up", "scrape_duration_seconds", "scrape_samples_scraped"):
        result.types[name] = pb.METRIC_TYPE_GAUGE
    return result


class Scraper:
    """Scrapes every target once per call of `scrape_all` (the caller keeps the schedule), a few
    at a time, and hands each result to `deliver`; logs a target going down or coming back once."""

    def __init__(self, targets: Iterable[ScrapeTarget], timeout_s: float, deliver: Callable[[Scraped], object]) -> None:
        self.targets = tuple(targets)
        self._timeout_s = timeout_s
        self._deliver = deliver
        self._down: set[ScrapeTarget] = set()
        self._pool = ThreadPoolExecutor(max_workers=min(4, max(1, len(self.targets))), thread_name_prefix="scrape")
        self._lock = threading.Lock()

    def scrape_all(self) -> None:
        for target, result in zip(self.targets, self._pool.map(self._one, self.targets), strict=True):
            self._report(target, result)
            self._deliver(result)

    def _one(self, target: ScrapeTarget) -> Scraped:
        return scrape(target, self._timeout_s)

    def _report(self, target: ScrapeTarget, result: Scraped) -> None:
        fields = {"job": target.job, "url": target.url}
        with self._lock:
            if not result.up and target not in self._down:
                self._down.add(target)
                _log.warning("scrape target down", extra={"fields": {**fields, "error": result.error}})
            elif result.up and target in self._down:
                self._down.discard(target)
                _log.info("scrape target up again", extra={"fields": fields})

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
