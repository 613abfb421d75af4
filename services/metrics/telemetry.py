"""The metrics service's own telemetry: ingest, acknowledgements, queries, watch, upkeep, pool.

Counters are recorded where the event happens (an ack sent, a query answered, a maintenance
pass); levels (open streams, subscribers, series, database connections) are gauges read from the
objects that already keep them, at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.telemetry import LATENCY_BUCKETS
from services.metrics.ingest.stream import BatchResult


class MetricsTelemetry:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.samples = Counter(
            "infrawatch_ingest_samples",
            "Samples received on StreamMetrics and remote-write, by outcome (accepted, duplicate, rejected).",
            ["outcome"],
            registry=registry,
        )
        self.rejected = Counter(
            "infrawatch_ingest_rejected_samples",
            "Samples not stored, by the reason given in the acknowledgement.",
            ["reason"],
            registry=registry,
        )
        self.batches = Counter("infrawatch_ingest_batches", "Batches committed and acknowledged.", registry=registry)
        self.ack_seconds = Histogram(
            "infrawatch_ingest_ack_seconds",
            "From a batch's arrival to its acknowledgement, the commit included.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.query_seconds = Histogram(
            "infrawatch_query_seconds",
            "Time to answer a query in this process, by kind (raw, aggregate, rate, latest).",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.watch_dropped = Counter(
            "infrawatch_watch_dropped_batches",
            "Committed batches a slow WatchMetrics subscriber lost (its oldest, past the backlog bound).",
            registry=registry,
        )
        self.maintenance_runs = Counter(
            "infrawatch_maintenance_runs", "Background passes of retention and compaction.", registry=registry
        )
        self.retention_dropped = Counter(
            "infrawatch_retention_dropped",
            "Day partitions (PostgreSQL) or chunks (SQLite) removed by retention.",
            registry=registry,
        )
        self.compaction_removed = Counter(
            "infrawatch_compaction_removed_chunks", "Chunks merged away by compaction.", registry=registry
        )
        self.maintenance_seconds = Histogram(
            "infrawatch_maintenance_seconds",
            "Duration of a retention and compaction pass.",
            buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 1800),
            registry=registry,
        )

    def acknowledged(self, result: BatchResult, seconds: float) -> None:
        self.batches.inc()
        self.ack_seconds.observe(seconds)
        for outcome, count in (("accepted", result.accepted), ("duplicate", result.duplicate)):
            if count:
                self.samples.labels(outcome).inc(count)
        if result.rejected:
            self.samples.labels("rejected").inc(result.rejected)
            for reason, count in result.rejected_by_reason.items():
                self.rejected.labels(reason.name.lower()).inc(count)

    def maintenance_pass(self, dropped: int, removed: int, seconds: float) -> None:
        self.maintenance_runs.inc()
        self.retention_dropped.inc(dropped)
        self.compaction_removed.inc(removed)
        self.maintenance_seconds.observe(seconds)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        Gauge(name, help_text, registry=self.registry).set_function(read)
