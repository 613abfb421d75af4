"""The production sample store: chunks in a day-partitioned PostgreSQL table.

Ingest writes a batch's chunks with one COPY and one commit. Aggregations run
in the database: chunks that lie inside one bucket contribute their stored
summaries; the others are unnested (`unnest ... WITH ORDINALITY`) and
aggregated row-wise, so Python only receives one row per output point.
Retention drops whole day partitions.
"""

from __future__ import annotations

import functools
import io
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import psycopg2.errors
from sqlalchemy import Engine

from agent.logs import event
from services.common.db import pooled_cursor
from services.metrics.domain import Aggregation
from services.metrics.query.aggregate import combine_partials, rate_lookbehind_ms
from services.metrics.storage.chunks import CHUNK_COLUMNS, MAX_CHUNK_SPAN_MS, ChunkColumns, chunk_timestamps
from services.metrics.storage.ports import Points
from services.metrics.storage.postgres.copy import COPY_SQL, copy_payload

DAY_MS = 86_400_000
_PARTITION = re.compile(r"^chunks_d(\d+)$")
_log = logging.getLogger("infrawatch.metrics.store")

_SELECTION = """
sel(series_id, grp) AS (SELECT * FROM unnest(%(ids)s::int[], %(grps)s::int[]))"""

_CHUNK_RANGE = "ch.start_ms <= %(end)s AND ch.start_ms >= %(lo)s AND ch.end_ms >= %(from)s"

_WHOLE = """(ch.start_ms >= %(start)s AND ch.end_ms <= %(end)s
             AND (ch.start_ms - %(start)s) / %(step)s = (ch.end_ms - %(start)s) / %(step)s)"""

# The three kinds of chunk are aggregated in three set-wise branches (a per-chunk LATERAL
# choosing between them cost ~5 microseconds a chunk). In each, chunks are reached per selected
# series through a LATERAL index lookup fenced with OFFSET 0:
# otherwise, once statistics exist, the planner flattens it into a hash join over a sequential scan
# of every chunk of every series (measured 2x slower after compaction, 15x before).
# Per aggregation: the partial columns each chunk contributes to a bucket, taken from
# (1) its stored summary when it lies inside one bucket, (2) array slices per bucket when its
# samples are evenly spaced (no per-sample timestamps to compute), (3) unnested samples
# otherwise; and how they combine per bucket into the partials (p0, p1) the query returns, which
# `aggregate.combine_partials` merges across the shards a large query is split into.
_PARTIALS: dict[Aggregation, tuple[str, tuple[str, str], str, str]] = {
    # (summary columns, (slice columns, aggregate over the slice's values `v` as `agg`),
    #  unnested-sample columns, per-bucket partials)
    Aggregation.AVG: (
        "ch.n::bigint, ch.sum", ("sl.i1 - sl.i0 + 1, agg", "sum(v)"), "count(*), sum(v)", "sum(p0), sum(p1)"
    ),
    Aggregation.SUM: ("0::bigint, ch.sum", ("0::bigint, agg", "sum(v)"), "0::bigint, sum(v)", "0, sum(p1)"),
    Aggregation.COUNT: (
        "ch.n::bigint, 0::float8", ("sl.i1 - sl.i0 + 1, 0::float8", ""), "count(*), 0::float8", "sum(p0), 0"
    ),
    Aggregation.MIN: ("0::bigint, ch.min", ("0::bigint, agg", "min(v)"), "0::bigint, min(v)", "0, min(p1)"),
    Aggregation.MAX: ("0::bigint, ch.max", ("0::bigint, agg", "max(v)"), "0::bigint, max(v)", "0, max(p1)"),
    # The newest sample of a slice is simply its last element. Ties between series: the greatest
    # value, NaN losing (aggregate.newer_or_greater; PostgreSQL sorts NaN above every number).
    Aggregation.LAST: (
        "ch.end_ms, ch.last",
        ("sl.t, ch.vals[sl.i1 + 1]", ""),
        "max(t), (array_agg(v ORDER BY t DESC, v = 'NaN'::float8, v DESC))[1]",
        "max(p0), (array_agg(p1 ORDER BY p0 DESC, p1 = 'NaN'::float8, p1 DESC))[1]",
    ),
}  # fmt: skip


def _chunks_of_selected(condition: str) -> str:
    return f"""sel CROSS JOIN LATERAL (
        SELECT * FROM chunks ch
        WHERE ch.series_id = sel.series_id AND {_CHUNK_RANGE} AND {condition} OFFSET 0
    ) ch"""


_REGULAR = "(ch.offsets IS NULL AND ch.interval_ms > 0)"


@functools.cache
def _aggregate_sql(aggregation: Aggregation) -> str:
    summary, (slice_columns, slice_aggregate), unnested, partials = _PARTIALS[aggregation]
    slice_join = ""
    if slice_aggregate:
        values = "unnest(ch.vals[sl.i0 + 1 : sl.i1 + 1]) AS v"
        slice_join = f"CROSS JOIN LATERAL (SELECT {slice_aggregate} FROM {values}) part(agg)"
    return f"""
WITH {_SELECTION}
SELECT grp, b, {partials} FROM (
    SELECT sel.grp, (ch.start_ms - %(start)s) / %(step)s AS b, {summary}
    FROM {_chunks_of_selected(_WHOLE)}
    UNION ALL
    SELECT sel.grp, sl.b, {slice_columns}
    FROM {_chunks_of_selected(f"{_REGULAR} AND NOT {_WHOLE}")}
    CROSS JOIN LATERAL (
        SELECT bk.b, idx.i0, idx.i1, ch.start_ms + idx.i1 * ch.interval_ms AS t
        FROM generate_series(
            (greatest(ch.start_ms, %(start)s) - %(start)s) / %(step)s,
            (least(ch.end_ms, %(end)s) - %(start)s) / %(step)s
        ) AS bk(b)
        CROSS JOIN LATERAL (
            SELECT greatest(0, (%(start)s + bk.b * %(step)s - ch.start_ms + ch.interval_ms - 1)
                               / ch.interval_ms) AS i0,
                   least(ch.n - 1, (least(%(start)s + (bk.b + 1) * %(step)s - 1, %(end)s) - ch.start_ms)
                               / ch.interval_ms) AS i1
        ) idx
        WHERE idx.i0 <= idx.i1
    ) sl {slice_join}
    UNION ALL
    SELECT grp, (t - %(start)s) / %(step)s, {unnested}
    FROM (
        SELECT sel.grp, ch.start_ms + COALESCE(ch.offsets[u.i], (u.i - 1) * ch.interval_ms) AS t, u.v
        FROM {_chunks_of_selected(f"NOT {_REGULAR} AND NOT {_WHOLE}")},
        unnest(ch.vals) WITH ORDINALITY AS u(v, i)
    ) samples
    WHERE t BETWEEN %(start)s AND %(end)s
    GROUP BY 1, 2
) parts(grp, b, p0, p1)
GROUP BY grp, b ORDER BY grp, b
"""


_UNNESTED = """
SELECT c.grp, c.series_id, c.start_ms + COALESCE(c.offsets[u.i], (u.i - 1) * c.interval_ms) AS ts, u.v
FROM c, unnest(c.vals) WITH ORDINALITY AS u(v, i)"""


_RATE = f"""
WITH {_SELECTION},
c AS (SELECT sel.grp, ch.* FROM {_chunks_of_selected("true")}),
samples AS ({_UNNESTED}),
deltas AS (
    SELECT grp, ts, v,
           lag(v) OVER (PARTITION BY series_id ORDER BY ts) AS prev,
           lag(ts) OVER (PARTITION BY series_id ORDER BY ts) AS prev_ts
    FROM samples WHERE ts BETWEEN %(from)s AND %(end)s AND v <> 'NaN'::float8
)
SELECT grp, b, 0,
       increase / (least(%(step)s, %(end)s + 1 - (%(start)s + b * %(step)s)) / 1000.0)
FROM (
    SELECT grp, (ts - %(start)s) / %(step)s AS b, sum(CASE WHEN v >= prev THEN v - prev ELSE v END) AS increase
    FROM deltas
    WHERE prev IS NOT NULL AND ts >= %(start)s AND ts - prev_ts <= %(lookbehind)s
    GROUP BY grp, b
) per_bucket
ORDER BY grp, b
"""

_RAW = """
SELECT series_id, start_ms, end_ms, interval_ms, offsets, vals FROM chunks
WHERE series_id = ANY(%(ids)s) AND start_ms <= %(end)s AND start_ms >= %(lo)s AND end_ms >= %(start)s
ORDER BY series_id, start_ms
"""

_COMPACT_CANDIDATES = """
SELECT DISTINCT start_ms / %(window)s FROM chunks
WHERE start_ms >= %(since)s AND start_ms < %(until)s
GROUP BY series_id, start_ms / %(window)s HAVING count(*) > 1
"""

# Chunks that start and end inside one window, for series with more than one such chunk.
# Only these exact rows are replaced, so chunks that ingest adds meanwhile are left alone.
_COMPACT_VICTIMS = """
CREATE TEMP TABLE victims ON COMMIT DROP AS
SELECT series_id, start_ms FROM chunks
WHERE start_ms >= %(start)s AND start_ms < %(end)s AND end_ms < %(end)s
  AND series_id IN (
      SELECT series_id FROM chunks
      WHERE start_ms >= %(start)s AND start_ms < %(end)s AND end_ms < %(end)s
      GROUP BY series_id HAVING count(*) > 1
  )
"""

_COMPACT_MERGED = """
CREATE TEMP TABLE merged ON COMMIT DROP AS
WITH samples AS (
    SELECT c.series_id, c.start_ms + COALESCE(c.offsets[u.i], (u.i - 1) * c.interval_ms) AS ts, u.v
    FROM chunks c JOIN victims USING (series_id, start_ms), unnest(c.vals) WITH ORDINALITY AS u(v, i)
    WHERE c.start_ms >= %(start)s AND c.start_ms < %(end)s
),
spaced AS (SELECT series_id, ts, v, ts - lag(ts) OVER (PARTITION BY series_id ORDER BY ts) AS gap FROM samples),
runs AS (
    SELECT series_id, min(ts) AS start_ms, max(ts) AS end_ms, count(*)::int AS n,
           sum(v) AS sum, min(v) AS min, max(v) AS max, (array_agg(v ORDER BY ts DESC))[1] AS last,
           min(gap) AS low_gap, max(gap) AS high_gap,
           array_agg(ts ORDER BY ts) AS times, array_agg(v ORDER BY ts) AS vals
    FROM spaced GROUP BY series_id
)
SELECT start_ms, end_ms, sum, min, max, last, series_id, n,
       CASE WHEN n = 1 THEN 0 WHEN low_gap = high_gap THEN low_gap::int ELSE 0 END AS interval_ms,
       CASE WHEN n = 1 OR low_gap = high_gap THEN NULL
            ELSE ARRAY(SELECT (t - start_ms)::int FROM unnest(times) AS t) END AS offsets,
       vals
FROM runs
"""

_NEWEST = """
SELECT s.id, l.end_ms, l.last FROM unnest(%(ids)s::int[]) AS s(id)
CROSS JOIN LATERAL (
    SELECT end_ms, last FROM chunks WHERE series_id = s.id ORDER BY start_ms DESC LIMIT 1
) l
"""


_COLUMN_LIST = ", ".join(CHUNK_COLUMNS)
COPY_READ_BYTES = 1 << 20
"""psycopg2 sends a COPY in pieces of this size (its default, 8 KiB, meant a Python call per 8 KiB)."""


PARALLEL_MIN_SERIES = 32
"""Below this many series a query runs on one connection; splitting costs more than it saves."""


class PostgresSampleStore:
    def __init__(self, engine: Engine, query_parallelism: int = 2) -> None:
        self._engine = engine
        self._partitions: set[int] = set()
        self._parallelism = max(1, query_parallelism)
        self._pool = ThreadPoolExecutor(max_workers=self._parallelism, thread_name_prefix="query-shard")

    def _cursor(self, commit: bool = False) -> AbstractContextManager[Any]:
        return pooled_cursor(self._engine, commit)

    def _known_partitions(self, cursor: Any) -> set[int]:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'chunks'::regclass"
        )
        return {int(m.group(1)) for (name,) in cursor.fetchall() if (m := _PARTITION.match(name))}

    def _ensure_partitions(self, days: set[int]) -> None:
        missing = days - self._partitions
        if not missing:
            return
        with self._cursor(commit=True) as cursor:
            self._partitions = self._known_partitions(cursor)
        for day in sorted(days - self._partitions):
            try:
                with self._cursor(commit=True) as cursor:
                    cursor.execute(
                        f"CREATE TABLE IF NOT EXISTS chunks_d{day} PARTITION OF chunks "
                        f"FOR VALUES FROM ({day * DAY_MS}) TO ({(day + 1) * DAY_MS})"
                    )
                event(_log, "partition created", partition=f"chunks_d{day}")
            except (psycopg2.errors.DuplicateTable, psycopg2.errors.UniqueViolation):
                pass  # another replica created it at the same moment
            self._partitions.add(day)

    def append(self, chunks: ChunkColumns) -> None:
        if not len(chunks):
            return
        self._ensure_partitions(set((chunks.start_ms // DAY_MS).tolist()))
        payload = copy_payload(chunks)
        try:
            with self._cursor(commit=True) as cursor:
                cursor.copy_expert(COPY_SQL.format(table="chunks"), io.BytesIO(payload), size=COPY_READ_BYTES)
        except psycopg2.errors.UniqueViolation:
            # A chunk with the same (series, start) exists: a re-send that raced past the
            # duplicate filter (two streams of one agent at once). Insert only what is new.
            with self._cursor(commit=True) as cursor:
                cursor.execute("CREATE TEMP TABLE incoming (LIKE chunks) ON COMMIT DROP")
                cursor.copy_expert(COPY_SQL.format(table="incoming"), io.BytesIO(payload), size=COPY_READ_BYTES)
                cursor.execute(
                    f"INSERT INTO chunks ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM incoming ON CONFLICT DO NOTHING"
                )

    def newest_timestamps(self, series_ids: Sequence[int]) -> dict[int, int]:
        return {series_id: newest for series_id, (newest, _) in self.latest(series_ids).items()}

    def _raw_rows(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> list[tuple[Any, ...]]:
        with self._cursor() as cursor:
            cursor.execute(
                _RAW,
                {"ids": list(series_ids), "start": start_ms, "end": end_ms, "lo": start_ms - MAX_CHUNK_SPAN_MS},
            )
            return list(cursor.fetchall())

    def stored_timestamps(self, series_id: int, start_ms: int, end_ms: int) -> set[int]:
        return set(self.raw([series_id], start_ms, end_ms).get(series_id, ([], []))[0])

    def points_within(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> int:
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(sum(n), 0) FROM chunks WHERE series_id = ANY(%(ids)s) "
                "AND start_ms >= %(start)s AND end_ms <= %(end)s",
                {"ids": list(series_ids), "start": start_ms, "end": end_ms},
            )
            return int(cursor.fetchone()[0])

    def raw(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> dict[int, Points]:
        result: dict[int, Points] = {}
        for series_id, start, end, interval, offsets, values in self._raw_rows(series_ids, start_ms, end_ms):
            times_out, values_out = result.setdefault(series_id, ([], []))
            times = chunk_timestamps(start, end, interval, offsets)
            if start >= start_ms and end <= end_ms:
                times_out.extend(times)
                values_out.extend(values)
            else:
                for t, v in zip(times, values, strict=True):
                    if start_ms <= t <= end_ms:
                        times_out.append(t)
                        values_out.append(v)
        return result

    def aggregate(
        self, groups: dict[int, int], start_ms: int, end_ms: int, step_ms: int, aggregation: Aggregation
    ) -> dict[int, Points]:
        params: dict[str, Any] = {"start": start_ms, "end": end_ms, "step": step_ms}
        if aggregation is Aggregation.RATE:
            lookbehind = rate_lookbehind_ms(step_ms)
            params["from"] = start_ms - lookbehind
            params["lo"] = start_ms - lookbehind - MAX_CHUNK_SPAN_MS
            params["lookbehind"] = lookbehind
            sql = _RATE
        else:
            params["from"] = start_ms
            params["lo"] = start_ms - MAX_CHUNK_SPAN_MS
            sql = _aggregate_sql(aggregation)

        def partials(shard: list[tuple[int, int]]) -> list[tuple[int, int, float, float]]:
            with self._cursor() as cursor:
                cursor.execute(sql, {**params, "ids": [s for s, _ in shard], "grps": [g for _, g in shard]})
                return [(grp, b, float(p0), float(p1)) for grp, b, p0, p1 in cursor.fetchall()]

        # A large selection is split over several connections that PostgreSQL serves on different
        # cores at once (the GIL is free while psycopg2 waits); the partials are then merged.
        items = list(groups.items())
        shards = self._parallelism if len(items) >= PARALLEL_MIN_SERIES else 1
        parts = [items[i::shards] for i in range(shards)]
        rows = partials(parts[0]) if shards == 1 else [r for p in self._pool.map(partials, parts) for r in p]
        return combine_partials(rows, aggregation, start_ms, step_ms)

    def latest(self, series_ids: Sequence[int]) -> dict[int, tuple[int, float]]:
        if not series_ids:
            return {}
        with self._cursor() as cursor:
            cursor.execute(_NEWEST, {"ids": list(series_ids)})
            return {row[0]: (row[1], row[2]) for row in cursor.fetchall()}

    def drop_older_than(self, cutoff_ms: int) -> int:
        dropped = 0
        with self._cursor(commit=True) as cursor:
            days = self._known_partitions(cursor)
        for day in sorted(days):
            if (day + 1) * DAY_MS + MAX_CHUNK_SPAN_MS <= cutoff_ms:
                with self._cursor(commit=True) as cursor:
                    cursor.execute(f"DROP TABLE IF EXISTS chunks_d{day}")
                self._partitions.discard(day)
                event(_log, "partition dropped", partition=f"chunks_d{day}")
                dropped += 1
        return dropped

    def compact(self, window_ms: int, since_ms: int, until_ms: int) -> int:
        """Merge each series' chunks inside every window (aligned to window_ms) that lies in
        [since_ms, until_ms) into one chunk; returns the number of chunks removed."""
        removed = 0
        with self._cursor() as cursor:
            cursor.execute(_COMPACT_CANDIDATES, {"window": window_ms, "since": since_ms, "until": until_ms})
            windows = sorted(row[0] for row in cursor.fetchall())
        for window in windows:
            start, end = window * window_ms, (window + 1) * window_ms
            if end > until_ms:
                continue
            with self._cursor(commit=True) as cursor:
                cursor.execute(_COMPACT_VICTIMS, {"start": start, "end": end})
                cursor.execute(_COMPACT_MERGED, {"start": start, "end": end})
                cursor.execute(
                    "DELETE FROM chunks c USING victims v WHERE c.series_id = v.series_id AND c.start_ms = v.start_ms "
                    "AND c.start_ms >= %(start)s AND c.start_ms < %(end)s",
                    {"start": start, "end": end},
                )
                deleted = cursor.rowcount
                cursor.execute(f"INSERT INTO chunks ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM merged")
                removed += deleted - cursor.rowcount
        return removed
