"""`make bench-storage`: bytes per sample on disk after simulated days of agent-like data.

For each store (PostgreSQL in a fresh schema, SQLite in a fresh file) it writes DAYS simulated days
of SERIES series (100 hosts x 10 metrics with exporter-like values, as `make bench`) scraped every
15 s, each scrape 0-4 ms late (--jitter-ms), sent as agents send them: each host flushes every 1, 2, 4
or 8 scrapes from its own phase, so batches fall across every window boundary. The store's own
maintenance pass runs every simulated 5 minutes with the service's defaults (1 h windows, 10 min
delay), exactly as the background task calls it; nothing else is run (no VACUUM, no ANALYZE).

Sizes are what a user would see: PostgreSQL, every table, index and TOAST of the schema
(`pg_total_relation_size`); SQLite, the database file with its WAL. Reported per day: "live" at the
day's last sample (the newest ~70 minutes are still fresh, as in a running service) and "settled"
once the day's last window has closed and been compacted.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2

from bench.__main__ import COUNTERS, GAUGES, _first_value, _next_value
from bench.platform import report
from services.common.db import create_db_engine, is_postgres, migrate, with_driver
from services.metrics.__main__ import MIGRATIONS, VERSION_TABLE
from services.metrics.maintenance import MaintenancePolicy, run_maintenance
from services.metrics.storage.chunks import Chunk, ChunkColumns, make_chunks
from services.metrics.storage.postgres.samples import PostgresSampleStore
from services.metrics.storage.series_sql import SqlSeriesStore
from services.metrics.storage.sqlite.samples import SqliteSampleStore

DAY_MS = 86_400_000
INTERVAL_MS = 15_000
JITTER_MS = 4
"""Each scrape is 0-4 ms late, as a scraper's timestamps are (a timer's wake-up, the collection)."""
FLUSH_EVERY = (1, 2, 4, 8)
MAINTENANCE_EVERY_MS = 300_000
POLICY = MaintenancePolicy(retention_ms=15 * DAY_MS)


def log(message: str) -> None:
    print(f"bench-storage: {message}", file=sys.stderr, flush=True)


class Workload:
    """The fleet's scrapes, round by round, and which hosts flush after each."""

    def __init__(self, series_ids: list[int], hosts: int, jitter_ms: int = JITTER_MS, seed: int = 27) -> None:
        self.rng = random.Random(seed)
        self.jitter_ms = jitter_ms
        names = [*GAUGES, *COUNTERS]
        per_host = len(series_ids) // hosts
        self.hosts = [series_ids[h * per_host : (h + 1) * per_host] for h in range(hosts)]
        self.names = {s: names[i % len(names)] for h in self.hosts for i, s in enumerate(h)}
        self.level = {s: _first_value(self.names[s], self.rng) for s in series_ids}
        self.flush_every = [self.rng.choice(FLUSH_EVERY) for _ in range(hosts)]
        self.phase = [self.rng.randrange(8) for _ in range(hosts)]
        self.offset = [self.rng.randrange(INTERVAL_MS) for _ in range(hosts)]
        self.buffered: list[list[tuple[int, list[float]]]] = [[] for _ in range(hosts)]

    def _take(self, host: int) -> list[Chunk]:
        """The chunks of what `host` has buffered, which it sends now."""
        times = [t for t, _ in self.buffered[host]]
        chunks = []
        if times:
            for i, s in enumerate(self.hosts[host]):
                chunks += make_chunks(s, times, [v[i] for _, v in self.buffered[host]])
        self.buffered[host] = []
        return chunks

    def flush(self) -> ChunkColumns:
        """Every host's buffered scrapes, as agents send them within a couple of minutes."""
        return ChunkColumns.from_chunks([c for host in range(len(self.hosts)) for c in self._take(host)])

    def round(self, number: int, day_start: int) -> ChunkColumns:
        """Scrape every host once; the chunks of the hosts that flush now."""
        chunks = []
        for host, series in enumerate(self.hosts):
            at = day_start + number * INTERVAL_MS + self.offset[host] + self.rng.randrange(self.jitter_ms + 1)
            values = []
            for s in series:
                self.level[s] = _next_value(self.names[s], self.level[s], self.rng)
                values.append(self.level[s])
            self.buffered[host].append((at, values))
            if (number + self.phase[host]) % self.flush_every[host] == 0:
                chunks += self._take(host)
        return ChunkColumns.from_chunks(chunks)


def size_on_disk(engine, schema: str, path: Path | None) -> int:
    if path is not None:
        files = {p.name: p.stat().st_size for p in path.parent.glob(path.name + "*")}
        log(f"files: {files}")
        return sum(files.values())
    with engine.connect() as connection:
        raw = connection.connection.driver_connection
        with raw.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
                (schema,),
            )
            return int(cursor.fetchone()[0])


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, object]:
    schema = f"bench_storage_{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="infrawatch-bench-storage-"))
    admin = None
    path: Path | None = None
    if backend == "postgres":
        admin = psycopg2.connect(args.postgres_url)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {schema}")
        engine = create_db_engine(f"{with_driver(args.postgres_url)}?options=-csearch_path%3D{schema}")
    else:
        path = workdir / "metrics.db"
        engine = create_db_engine(f"sqlite:///{path}")
    try:
        migrate(engine, MIGRATIONS, VERSION_TABLE)
        store = PostgresSampleStore(engine) if is_postgres(engine) else SqliteSampleStore(engine)
        created = SqlSeriesStore(engine).create_series(
            [((("__name__", "bench"), ("series", str(i))), "bench-storage") for i in range(args.series)], 0
        )
        series_ids = sorted(row.series_id for row in created.values())
        workload = Workload(series_ids, hosts=max(1, args.series // 10), jitter_ms=args.jitter_ms)
        first_day = (int(time.time() * 1000) // DAY_MS - args.days - 1) * DAY_MS
        rounds_per_day = DAY_MS // INTERVAL_MS
        samples, days = 0, []
        next_maintenance = first_day + MAINTENANCE_EVERY_MS
        for day in range(args.days):
            began = time.perf_counter()
            day_start = first_day + day * DAY_MS
            for number in range(rounds_per_day):
                columns = workload.round(number, day_start)
                store.append(columns)
                samples += columns.samples
                now = day_start + (number + 1) * INTERVAL_MS
                if now >= next_maintenance:
                    run_maintenance(store, POLICY, now)
                    next_maintenance += MAINTENANCE_EVERY_MS
                if number and number % (rounds_per_day // 8) == 0:
                    log(f"{backend}: day {day + 1}, {number * 100 // rounds_per_day}% ({samples:,} samples)")
            live = size_on_disk(engine, schema, path)
            # What the agents still buffer arrives within minutes, long before the day's last
            # window closes: settling without it would fold the last block twice.
            store.append(workload.flush())
            settle_at = day_start + DAY_MS + POLICY.compaction_window_ms + POLICY.compaction_delay_ms
            run_maintenance(store, POLICY, settle_at)
            settled = size_on_disk(engine, schema, path)
            days.append(
                {
                    "day": day + 1,
                    "samples": samples,
                    "live_bytes": live,
                    "live_bytes_per_sample": round(live / samples, 2),
                    "settled_bytes": settled,
                    "settled_bytes_per_sample": round(settled / samples, 2),
                    "seconds": round(time.perf_counter() - began, 1),
                }
            )
            log(f"{backend}: {days[-1]}")
        return {"backend": backend, "series": args.series, "jitter_ms": args.jitter_ms, "days": days}
    finally:
        engine.dispose()
        if admin is not None:
            with admin.cursor() as cursor:
                cursor.execute(f"DROP SCHEMA {schema} CASCADE")
            admin.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("postgres", "sqlite", "both"), default="both")
    parser.add_argument("--series", type=int, default=1000, help="series written (10 per host; default 1000)")
    parser.add_argument("--days", type=int, default=2, help="simulated days (default 2)")
    parser.add_argument(
        "--jitter-ms", type=int, default=JITTER_MS, help="each scrape up to this late (default 4; 0: on the grid)"
    )
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--output", default="bench-storage.json")
    args = parser.parse_args()
    backends = ("postgres", "sqlite") if args.backend == "both" else (args.backend,)
    report({"stores": [run_backend(backend, args) for backend in backends]}, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
