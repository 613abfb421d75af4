"""The production sample store: chunks in a day-partitioned PostgreSQL table.

Ingest writes a batch's chunks in the plain form (float8[] arrays) with one
COPY and one commit; compaction rewrites closed windows in the packed form (a
bytea blob, services.metrics.storage.codec). Aggregations split the work: the
chunks that lie inside one bucket are aggregated in SQL from their stored
summaries alone (one rollup row per group and bucket comes back, no payload is
read), and the other chunks' payloads come back as bytes (`array_send` for the
plain form, the blob itself for the packed one) and are decoded into samples;
the query layer (services.metrics.query.aggregate) computes the answer.
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
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg2.errors
import psycopg2.extras
from sqlalchemy import Engine

from agent.logs import event
from services.common.db import pooled_cursor, pooled_read_cursor
from services.metrics.domain import Aggregation
from services.metrics.storage import codec
from services.metrics.storage.chunks import (
    CHUNK_COLUMNS,
    MAX_STORED_SPAN_MS,
    PACKED_BLOCK_MS,
    ChunkColumns,
    PlainForm,
    compaction_due,
    decode_rows,
    rewrite_window,
)
from services.metrics.storage.columns import AggregationInput, DerivedReads, Rollups, Samples
from services.metrics.storage.ports import TooManyPoints
from services.metrics.storage.postgres.copy import COPY_SQL, copy_payload

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
_log = logging.getLogger("infrawatch.metrics.store")

_SELECTION = """
sel(series_id, grp) AS (SELECT * FROM unnest(%(ids)s::int[], %(grps)s::int[]))"""

_CHUNK_RANGE = "ch.start_ms <= %(end)s AND ch.start_ms >= %(lo)s AND ch.end_ms >= %(from)s"

_WHOLE = """(ch.start_ms >= %(start)s AND ch.end_ms <= %(end)s
             AND (ch.start_ms - %(start)s) / %(step)s = (ch.end_ms - %(start)s) / %(step)s)"""

# Chunks are reached per selected series through a LATERAL index lookup fenced with OFFSET 0:
# otherwise, once statistics exist, the planner flattens it into a hash join over a sequential scan
# of every chunk of every series (measured 2x slower after compaction, 15x before).
# Per aggregation: the partial columns a whole-bucket chunk contributes from its stored summary,
# and how they combine per bucket into the partials (p0, p1) that `aggregate.Partials` merges with
# the decoded chunks' and the other shards'.
_SUMMARY_PARTIALS: dict[Aggregation, tuple[str, str]] = {
    Aggregation.AVG: ("ch.n::bigint, ch.sum", "sum(p0), sum(p1)"),
    Aggregation.SUM: ("0::bigint, ch.sum", "0, sum(p1)"),
    Aggregation.COUNT: ("ch.n::bigint, 0::float8", "sum(p0), 0"),
    Aggregation.MIN: ("0::bigint, ch.min", "0, min(p1)"),
    Aggregation.MAX: ("0::bigint, ch.max", "0, max(p1)"),
    # Ties between series: the greatest value, NaN losing (aggregate.newer_or_greater; PostgreSQL
    # sorts NaN above every number).
    Aggregation.LAST: (
        "ch.end_ms, ch.last", "max(p0), (array_agg(p1 ORDER BY p0 DESC, p1 = 'NaN'::float8, p1 DESC))[1]"
    ),
}  # fmt: skip


def _chunks_of_selected(condition: str) -> str:
    return f"""sel CROSS JOIN LATERAL (
        SELECT * FROM stored_chunks ch
        WHERE ch.series_id = sel.series_id AND {_CHUNK_RANGE} AND {condition} OFFSET 0
    ) ch"""


_PAYLOAD = (
    "ch.series_id, ch.start_ms, ch.n, ch.interval_ms, ch.codec, array_send(ch.offsets) AS offsets, "
    "CASE WHEN ch.codec = 0 THEN array_send(ch.vals) ELSE ch.packed END AS payload"
)
"""A chunk as `chunks.decode_rows` reads it (a StoredRow)."""

_SUMMARY_ROW, _PAYLOAD_ROW = 0, 1


@functools.cache
def _aggregate_sql(aggregation: Aggregation) -> str:
    """One round trip: per (group, bucket) partials of the chunks whose summaries answer their
    bucket, then the payloads of the other chunks in range (for RATE every chunk's payload), told
    apart by the first column and padded to one row shape."""
    rate = aggregation is Aggregation.RATE
    payload_rows = f"""
    SELECT {_PAYLOAD_ROW}, sel.grp, {_PAYLOAD}, 0::float8, 0::float8
    FROM {_chunks_of_selected("true" if rate else f"NOT {_WHOLE}")}"""
    if rate:
        return f"WITH {_SELECTION} {payload_rows} ORDER BY 3, 4"
    summary, partials = _SUMMARY_PARTIALS[aggregation]
    return f"""
WITH {_SELECTION}
SELECT {_SUMMARY_ROW}, grp, 0, b, 0, 0, 0::smallint, NULL::bytea, NULL::bytea, p0::float8, p1::float8 FROM (
    SELECT grp, b, {partials} FROM (
        SELECT sel.grp, (ch.start_ms - %(start)s) / %(step)s, {summary}
        FROM {_chunks_of_selected(_WHOLE)}
    ) parts(grp, b, p0, p1)
    GROUP BY grp, b
) summaries(grp, b, p0, p1)
UNION ALL
{payload_rows}
ORDER BY 1, 3, 4
"""


# The payloads, only when the chunks wholly inside the range hold no more samples than the limit
# (a one-time filter PostgreSQL evaluates before reading any chunk). An empty answer is checked
# against the count alone (`_RAW_INSIDE`), rare and cheap.
_RAW = f"""
SELECT {_PAYLOAD} FROM stored_chunks ch
WHERE ch.series_id = ANY(%(ids)s) AND {_CHUNK_RANGE}
  AND (SELECT coalesce(sum(n), 0) FROM stored_chunks WHERE series_id = ANY(%(ids)s)
       AND start_ms >= %(from)s AND end_ms <= %(end)s) <= %(limit)s
ORDER BY 1, 2
"""

_WITH_SAMPLES = (
    f"SELECT DISTINCT ch.series_id FROM stored_chunks ch WHERE ch.series_id = ANY(%(ids)s) AND {_CHUNK_RANGE}"
)

_RAW_INSIDE = """
SELECT coalesce(sum(n), 0) FROM stored_chunks
WHERE series_id = ANY(%(ids)s) AND start_ms >= %(from)s AND end_ms <= %(end)s
"""

_PLAIN = PlainForm(
    header=20,  # array_send of a one-dimensional array: ndim, flags, element type, length, lower bound
    values=np.dtype([("len", ">i4"), ("v", ">f8")]),
    offsets=np.dtype([("len", ">i4"), ("v", ">i4")]),
)
"""Plain payloads as array_send writes them: each element its length, then its big-endian bytes."""


# Windows with a plain chunk (fresh, late, or stored before schema 0002). Not "more than one
# chunk": a packed chunk longer than a row may hold is stored in pieces, which must not be
# rewritten on every pass.
_COMPACT_CANDIDATES = """
SELECT DISTINCT start_ms / %(window)s FROM stored_chunks
WHERE start_ms >= %(since)s AND start_ms < %(until)s AND codec = 0
"""

# Blocks with anything still fresh (the first tier's packed hours, late data) or plain chunks from
# before schema 0004. Packed chunks already in `chunks` are left as they are, so an upgrade does
# not rewrite a store's whole history.
_BLOCK_CANDIDATES = """
SELECT DISTINCT start_ms / %(window)s FROM fresh_chunks WHERE start_ms >= %(since)s AND start_ms < %(until)s
UNION
SELECT DISTINCT start_ms / %(window)s FROM recent_chunks WHERE start_ms >= %(since)s AND start_ms < %(until)s
UNION
SELECT DISTINCT start_ms / %(window)s FROM chunks WHERE start_ms >= %(since)s AND start_ms < %(until)s AND codec = 0
"""

_STARTS_IN_WINDOW = "start_ms >= %(start)s AND start_ms < %(end)s"

# The hours that chunks starting in the window reach into past its end (batches straddling it).
_STRADDLED_HOURS = f"""
SELECT DISTINCT end_ms / {HOUR_MS} FROM stored_chunks WHERE {_STARTS_IN_WINDOW} AND end_ms >= %(end)s
"""

# Series with a plain chunk starting in the window (all their chunks there are rewritten).
_COMPACT_SERIES = f"""
SELECT DISTINCT series_id FROM stored_chunks WHERE {_STARTS_IN_WINDOW} AND codec = 0 ORDER BY series_id
"""

# Series with any fresh or recent chunk, or a plain one, starting in the block.
_BLOCK_SERIES = f"""
SELECT series_id FROM fresh_chunks WHERE {_STARTS_IN_WINDOW}
UNION SELECT series_id FROM recent_chunks WHERE {_STARTS_IN_WINDOW}
UNION SELECT series_id FROM chunks WHERE {_STARTS_IN_WINDOW} AND codec = 0 ORDER BY 1
"""

# Only these exact rows are replaced, so chunks that ingest adds meanwhile are left alone; the
# row locks make a second replica compacting the same window wait, then find nothing left to do.
# (FOR UPDATE cannot go through the view's UNION: each table is read and locked by itself.)
_COMPACT_VICTIMS = f"""
SELECT {_PAYLOAD.replace("ch.", "")} FROM {{table}}
WHERE series_id = ANY(%(ids)s) AND {_STARTS_IN_WINDOW}
ORDER BY series_id, start_ms FOR UPDATE
"""

_COMPACT_DELETE = """
DELETE FROM {table} c USING unnest(%(ids)s::int[], %(starts)s::bigint[]) AS v(series_id, start_ms)
WHERE c.series_id = v.series_id AND c.start_ms = v.start_ms AND c.start_ms >= %(start)s AND c.start_ms < %(end)s
"""

_PACKED_INSERT = (
    "INSERT INTO {table} (start_ms, end_ms, sum, min, max, last, series_id, n, interval_ms, codec, packed) VALUES %s"
)

RELEASE_LOCK_TIMEOUT = "200ms"
"""How long releasing an emptied fresh or recent partition waits for its lock before leaving it to the next
pass: the drop briefly locks the parent table, and no query or ingest may queue behind it longer."""

COMPACTION_SERIES_PER_TRANSACTION = 2000
"""Compaction rewrites a window this many series at a time, so memory stays bounded."""

_NEWEST = """
SELECT s.id, l.end_ms, l.last FROM unnest(%(ids)s::int[]) AS s(id)
CROSS JOIN LATERAL (
    SELECT end_ms, last FROM stored_chunks WHERE series_id = s.id ORDER BY start_ms DESC LIMIT 1
) l
"""


_COLUMN_LIST = ", ".join(CHUNK_COLUMNS)
COPY_READ_BYTES = 1 << 20
"""psycopg2 sends a COPY in pieces of this size (its default, 8 KiB, meant a Python call per 8 KiB)."""


PARALLEL_MIN_SERIES = 32
"""Below this many series a query runs on one connection; splitting costs more than it saves."""


@dataclass(frozen=True)
class _PartitionScheme:
    """A partitioned table whose partitions are `<prefix><number>`, each covering `span_ms` of start_ms."""

    parent: str
    prefix: str
    span_ms: int

    def name(self, number: int) -> str:
        return f"{self.prefix}{number}"

    def numbers(self, start_ms: np.ndarray) -> set[int]:
        return set((start_ms // self.span_ms).tolist())


PACKED = _PartitionScheme("chunks", "chunks_d", DAY_MS)
"""Packed chunks of closed blocks (and plain ones from before schema 0004): one partition per UTC
day. A block's blob (1-4 KB) stays in its row (`packed` is STORAGE MAIN, schema 0005)."""
RECENT = _PartitionScheme("recent_chunks", "recent_b", PACKED_BLOCK_MS)
"""Packed chunks of closed hours whose block is still open: one partition per block, dropped
whole once the block is folded into `chunks`."""
FRESH = _PartitionScheme("fresh_chunks", "fresh_h", HOUR_MS)
"""What ingest writes: one partition per hour, dropped whole once compaction has emptied it."""
_TABLES = (PACKED.parent, RECENT.parent, FRESH.parent)

_PARTITION_GONE = (psycopg2.errors.UndefinedTable, psycopg2.errors.CheckViolation, psycopg2.errors.InternalError_)
"""What a COPY meets when a fresh partition it needs was dropped by compaction on another
connection meanwhile (late data for a closed hour): the table is gone, no partition takes the row,
or the partition vanished while the COPY waited for its lock. Nothing was written; it is retried."""


class PostgresSampleStore(DerivedReads):
    def __init__(self, engine: Engine, query_parallelism: int = 2) -> None:
        self._engine = engine
        self._partitions: dict[str, set[int]] = {table: set() for table in _TABLES}
        self._parallelism = max(1, query_parallelism)
        self._pool = ThreadPoolExecutor(max_workers=self._parallelism, thread_name_prefix="query-shard")

    def _cursor(self, commit: bool = False) -> AbstractContextManager[Any]:
        return pooled_cursor(self._engine, commit)

    def _known_partitions(self, cursor: Any, scheme: _PartitionScheme) -> set[int]:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            (scheme.parent,),
        )
        pattern = re.compile(rf"^{scheme.prefix}(\d+)$")
        return {int(m.group(1)) for (name,) in cursor.fetchall() if (m := pattern.match(name))}

    def _ensure_partitions(self, scheme: _PartitionScheme, numbers: set[int], refresh: bool = False) -> None:
        known = self._partitions[scheme.parent]
        if not refresh and numbers <= known:
            return
        with self._cursor(commit=True) as cursor:
            known = self._partitions[scheme.parent] = self._known_partitions(cursor, scheme)
        for number in sorted(numbers - known):
            low, high = number * scheme.span_ms, (number + 1) * scheme.span_ms
            try:
                with self._cursor(commit=True) as cursor:
                    cursor.execute(
                        f"CREATE TABLE IF NOT EXISTS {scheme.name(number)} PARTITION OF {scheme.parent} "
                        f"FOR VALUES FROM ({low}) TO ({high})"
                    )
                event(_log, "partition created", partition=scheme.name(number))
            except (psycopg2.errors.DuplicateTable, psycopg2.errors.UniqueViolation):
                pass  # another replica created it at the same moment
            known.add(number)

    def append(self, chunks: ChunkColumns) -> None:
        if not len(chunks):
            return
        hours = FRESH.numbers(chunks.start_ms)
        payload = copy_payload(chunks)
        try:
            self._ensure_partitions(FRESH, hours)
            self._copy_fresh(payload, hours)
        except _PARTITION_GONE as error:
            event(_log, "fresh partition gone during a write; recreating it and writing again", error=str(error))
            self._ensure_partitions(FRESH, hours, refresh=True)
            self._copy_fresh(payload, hours)

    def _copy_fresh(self, payload: bytes, hours: set[int]) -> None:
        # Rows of one hour go straight into that hour's partition: PostgreSQL then checks the
        # partition's bound instead of routing every row through the parent.
        table = FRESH.name(next(iter(hours))) if len(hours) == 1 else FRESH.parent
        try:
            with self._cursor(commit=True) as cursor:
                cursor.copy_expert(COPY_SQL.format(table=table), io.BytesIO(payload), size=COPY_READ_BYTES)
        except psycopg2.errors.UniqueViolation:
            # A chunk with the same (series, start) exists: a re-send that raced past the
            # duplicate filter (two streams of one agent at once). Insert only what is new.
            with self._cursor(commit=True) as cursor:
                # INCLUDING DEFAULTS: the stream names CHUNK_COLUMNS only, and `codec` (NOT NULL) takes
                # its default; without it every racing re-send failed the whole group commit.
                cursor.execute("CREATE TEMP TABLE incoming (LIKE fresh_chunks INCLUDING DEFAULTS) ON COMMIT DROP")
                cursor.copy_expert(COPY_SQL.format(table="incoming"), io.BytesIO(payload), size=COPY_READ_BYTES)
                cursor.execute(
                    f"INSERT INTO fresh_chunks ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM incoming "
                    "ON CONFLICT DO NOTHING"
                )

    def raw_samples(
        self, series_ids: Sequence[int], start_ms: int, end_ms: int, refuse_above: int | None = None
    ) -> Samples:
        ids = sorted(set(series_ids))
        params = {
            "ids": ids, "end": end_ms, "lo": start_ms - MAX_STORED_SPAN_MS, "from": start_ms,
            "limit": refuse_above if refuse_above is not None else 2**62,
        }  # fmt: skip
        with pooled_read_cursor(self._engine) as cursor:
            cursor.execute_prepared("infrawatch_raw", _RAW, params)
            rows = cursor.fetchall()
            if not rows and refuse_above is not None:
                cursor.execute(_RAW_INSIDE, params)
                if (inside := int(cursor.fetchone()[0])) > refuse_above:
                    raise TooManyPoints(inside)
        _, series, times, values = decode_rows(rows, _PLAIN)
        return Samples(series, series, times, values).within(start_ms, end_ms)

    def series_with_samples(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> set[int]:
        if not series_ids:
            return set()
        params = {"ids": sorted(set(series_ids)), "end": end_ms, "lo": start_ms - MAX_STORED_SPAN_MS, "from": start_ms}
        with pooled_read_cursor(self._engine) as cursor:
            cursor.execute(_WITH_SAMPLES, params)
            return {int(row[0]) for row in cursor.fetchall()}

    def aggregation_input(
        self,
        groups: dict[int, int],
        read_from_ms: int,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        aggregation: Aggregation,
    ) -> AggregationInput:
        reach = read_from_ms
        params: dict[str, Any] = {
            "start": start_ms, "end": end_ms, "step": step_ms, "from": reach, "lo": reach - MAX_STORED_SPAN_MS,
        }  # fmt: skip

        sql = _aggregate_sql(aggregation)

        def fetch(shard: list[int]) -> list[tuple[Any, ...]]:
            with pooled_read_cursor(self._engine) as cursor:
                cursor.execute_prepared(
                    f"infrawatch_{aggregation.name.lower()}",
                    sql,
                    {**params, "ids": shard, "grps": [groups[s] for s in shard]},
                )
                return cursor.fetchall()

        # A large selection is split over several connections that PostgreSQL serves on different
        # cores at once (the GIL is free while psycopg2 waits). The rows are decoded together
        # afterwards: one batch decodes faster than two threads contending for the GIL. Each
        # series lies in one shard, so its chunks stay together and in order.
        ids = sorted(groups)
        shards = self._parallelism if len(ids) >= PARALLEL_MIN_SERIES else 1
        parts = [ids[i::shards] for i in range(shards)]
        rows = fetch(parts[0]) if shards == 1 else [row for found in self._pool.map(fetch, parts) for row in found]
        rollups = Rollups.from_rows([(r[1], r[3], r[9], r[10]) for r in rows if r[0] == _SUMMARY_ROW])
        payloads = [r for r in rows if r[0] == _PAYLOAD_ROW]
        index, series, times, values = decode_rows([r[2:9] for r in payloads], _PLAIN)
        row_groups = np.array([r[1] for r in payloads], dtype=np.int64)
        return AggregationInput(Samples(series, row_groups[index], times, values), rollups=rollups)

    def latest(self, series_ids: Sequence[int]) -> dict[int, tuple[int, float]]:
        if not series_ids:
            return {}
        with self._cursor() as cursor:
            cursor.execute(_NEWEST, {"ids": list(series_ids)})
            return {row[0]: (row[1], row[2]) for row in cursor.fetchall()}

    def drop_older_than(self, cutoff_ms: int) -> int:
        dropped = 0
        for scheme in (PACKED, RECENT, FRESH):
            with self._cursor(commit=True) as cursor:
                numbers = self._known_partitions(cursor, scheme)
            for number in sorted(numbers):
                if (number + 1) * scheme.span_ms + MAX_STORED_SPAN_MS <= cutoff_ms:
                    with self._cursor(commit=True) as cursor:
                        cursor.execute(f"DROP TABLE IF EXISTS {scheme.name(number)}")
                    self._partitions[scheme.parent].discard(number)
                    event(_log, "partition dropped", partition=scheme.name(number), reason="retention")
                    dropped += 1
        return dropped

    def compact(self, window_ms: int, since_ms: int, until_ms: int) -> int:
        """Compaction in two tiers, over the windows (aligned to window_ms) and blocks (aligned to
        PACKED_BLOCK_MS) that closed in [since_ms, until_ms):
        - in each closed window of a block still open, every series' chunks starting in it become
          one packed chunk in `recent_chunks` (where the series has a plain chunk there);
        - in each closed block, every series' chunks starting in it, packed or not, become one
          packed chunk in `chunks` (where any of them is fresh, recent or plain).
        Then the fresh partitions of closed hours and the recent ones of closed blocks that are
        left empty are dropped. Returns the number of chunk rows merged away."""
        span = {"since": since_ms, "until": until_ms}
        removed = 0
        # Blocks first: the samples of their straddling chunks past the block's end go back to the
        # fresh table, to be packed by the windows' pass right after.
        for candidates, length, select_series, into in (
            (_BLOCK_CANDIDATES, PACKED_BLOCK_MS, _BLOCK_SERIES, PACKED),
            (_COMPACT_CANDIDATES, window_ms, _COMPACT_SERIES, RECENT),
        ):
            with self._cursor() as cursor:
                cursor.execute(candidates, {**span, "window": length})
                windows = sorted(row[0] for row in cursor.fetchall())
            for window in windows:
                start, end = window * length, (window + 1) * length
                if compaction_due(start, end, until_ms, block=into is PACKED):
                    removed += self._compact_window(start, end, select_series, into)
        for scheme in (FRESH, RECENT):
            self._release_emptied(scheme, until_ms)
        return removed

    def _compact_window(self, start: int, end: int, select_series: str, into: _PartitionScheme) -> int:
        """Rewrite the chunks starting in [start, end) of the series `select_series` finds as one
        packed chunk per series in `into`'s table; the samples of chunks reaching past `end` go
        back to the fresh table, plain."""
        bounds = {"start": start, "end": end}
        with self._cursor() as cursor:
            cursor.execute(select_series, bounds)
            series = [row[0] for row in cursor.fetchall()]
            cursor.execute(_STRADDLED_HOURS, bounds)
            straddled = {int(row[0]) for row in cursor.fetchall()}
        # Partitions are created before the rewrite's transaction, never inside it: creating one
        # waits for every transaction using the parent, this one included.
        self._ensure_partitions(into, set(range(start // into.span_ms, (end - 1) // into.span_ms + 1)))
        self._ensure_partitions(FRESH, straddled)
        insert = _PACKED_INSERT.format(table=into.parent)
        removed = 0
        for offset in range(0, len(series), COMPACTION_SERIES_PER_TRANSACTION):
            ids = series[offset : offset + COMPACTION_SERIES_PER_TRANSACTION]
            with self._cursor(commit=True) as cursor:
                victims: dict[str, list[tuple[Any, ...]]] = {}
                for table in _TABLES:
                    cursor.execute(_COMPACT_VICTIMS.format(table=table), {**bounds, "ids": ids})
                    victims[table] = cursor.fetchall()
                rows = sorted([row for found in victims.values() for row in found], key=lambda row: (row[0], row[1]))
                if not rows:
                    continue
                _, series_ids, times, values = decode_rows(rows, _PLAIN)
                packed, beyond = rewrite_window(series_ids, times, values, start, end)
                for table, found in victims.items():
                    if found:
                        cursor.execute(
                            _COMPACT_DELETE.format(table=table),
                            {**bounds, "ids": [v[0] for v in found], "starts": [v[1] for v in found]},
                        )
                # Longest first: the heap then fills its pages as first-fit-decreasing packs bins, the
                # shorter rows going into the room the longer ones left (91 % full against 84 % in
                # series order, 1.95 against 2.10 bytes a sample).
                packed_rows = [
                    (c.start_ms, c.end_ms, c.sum, c.min, c.max, c.last, c.series_id, c.count, c.interval_ms,
                     codec.PACKED, psycopg2.Binary(c.blob))
                    for c in sorted(packed, key=lambda c: -len(c.blob))
                ]  # fmt: skip
                psycopg2.extras.execute_values(cursor, insert, packed_rows, page_size=1000)
                if len(beyond):
                    # The part of straddling chunks past the window: plain again, in its own hour.
                    cursor.copy_expert(
                        COPY_SQL.format(table=FRESH.parent), io.BytesIO(copy_payload(beyond)), size=COPY_READ_BYTES
                    )
            removed += max(0, len(rows) - len(packed) - len(beyond))  # pieces can outnumber the rows
        return removed

    def _release_emptied(self, scheme: _PartitionScheme, until_ms: int) -> None:
        """Drop every partition of `scheme` whose span closed before `until_ms` and that holds no
        chunk any more (compaction moved them all): its space goes back to the file system at
        once, where deleted rows would stay in the table as dead tuples. The partition is locked
        before it is found empty, so a late write either lands before (and the partition stays)
        or waits and is retried into a new partition."""
        with self._cursor() as cursor:
            numbers = self._known_partitions(cursor, scheme)
        for number in sorted(n for n in numbers if (n + 1) * scheme.span_ms <= until_ms):
            name = scheme.name(number)
            try:
                with self._cursor(commit=True) as cursor:
                    cursor.execute(f"SET LOCAL lock_timeout = '{RELEASE_LOCK_TIMEOUT}'")
                    cursor.execute(f"LOCK TABLE {scheme.parent}, {name} IN ACCESS EXCLUSIVE MODE")
                    cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {name})")
                    if cursor.fetchone()[0]:
                        continue  # late data arrived since: packed by a later pass
                    cursor.execute(f"DROP TABLE {name}")
            except (psycopg2.errors.LockNotAvailable, psycopg2.errors.UndefinedTable):
                continue  # busy, or another replica dropped it: the next pass tries again
            self._partitions[scheme.parent].discard(number)
            event(_log, "emptied partition released", partition=name)
