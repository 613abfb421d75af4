"""The embedded sample store: chunks in SQLite, arrays packed as little-endian BLOBs.

SQLite cannot unnest arrays, so every query reads the chunks in range and hands them to the
query layer (services.metrics.query.aggregate computes): chunks that lie wholly inside one bucket
by their stored summaries only (the payload is not even read), the others decoded, in either form (plain
little-endian arrays as ingest writes them, or packed by compaction). SQLite turns NaN into NULL
in REAL columns, so NULL summaries read back as NaN.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from sqlalchemy import Engine

from agent.logs import event
from services.common.db import pooled_cursor
from services.metrics.domain import Aggregation
from services.metrics.storage import codec
from services.metrics.storage.chunks import (
    MAX_STORED_SPAN_MS,
    PACKED_BLOCK_MS,
    ChunkColumns,
    PackedChunk,
    PlainForm,
    StoredRow,
    compaction_due,
    decode_rows,
    rewrite_window,
)
from services.metrics.storage.columns import AggregationInput, DerivedReads, Samples, Summaries
from services.metrics.storage.ports import TooManyPoints

_log = logging.getLogger("infrawatch.metrics.store")

_PLAIN = PlainForm(header=0, values=np.dtype("<f8"), offsets=np.dtype("<i4"))
"""Plain payloads as this store writes them: little-endian float64 values, int32 offsets."""


def _inline_blob_bytes(page_size: int, table: str) -> int:
    """The longest packed blob a chunk row of `table` keeps in its page; a longer row spills into
    overflow pages of its own, mostly empty (a 2.4 KB chunk in 4 KiB pages took two pages). A
    rowid table's cell holds up to the page less 35 bytes; a WITHOUT ROWID table is an index
    b-tree, whose cells hold at most (page - 12) x 64 / 255 - 23 bytes (~1 KB in 4 KiB pages, ~4
    KB in 16 KiB ones). The other columns take ~70 bytes."""
    cell = page_size - 35 if table == "block_chunks" else (page_size - 12) * 64 // 255 - 23
    return cell - 80


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


_COLUMNS = "series_id, start_ms, end_ms, n, interval_ms, offsets, vals, sum, min, max, last, codec"
"""The SQLite table's columns in the order its rows are written here (named in every statement)."""


_INSERT = "INSERT OR IGNORE INTO {table} (" + _COLUMNS + ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
"""Ingest writes `fresh_chunks` (schema 0004), compaction packed hours there too and closed blocks
to `block_chunks` (0005; `chunks` holds what earlier versions packed); reads go through
`stored_chunks`."""

_WHOLE = "(start_ms >= :start AND end_ms <= :end AND (start_ms - :start) / :step = (end_ms - :start) / :step)"
"""A chunk whose stored summary answers its bucket (query.aggregate.whole_in_one_bucket says the same)."""

_IN_RANGE = "start_ms <= :end AND start_ms >= :lo AND end_ms >= :from"


def _rows(chunks: ChunkColumns) -> list[tuple[object, ...]]:
    """One INSERT row per chunk, in the plain form; sample arrays become little-endian BLOBs."""
    bounds = chunks.bounds.tolist()
    times = chunks.timestamps
    values = chunks.values.astype("<f8", copy=False)
    starts, ends = times[bounds[:-1]].tolist(), times[np.array(bounds[1:], dtype=np.int64) - 1].tolist()
    rows: list[tuple[object, ...]] = []
    for i, (series_id, count, interval) in enumerate(
        zip(chunks.series_id.tolist(), chunks.counts.tolist(), chunks.interval_ms.tolist(), strict=True)
    ):
        lo, hi = bounds[i], bounds[i + 1]
        offsets = None
        if interval == 0 and count > 1:
            offsets = (times[lo:hi] - starts[i]).astype("<i4").tobytes()
        rows.append(
            (
                series_id,
                starts[i],
                ends[i],
                count,
                interval,
                offsets,
                values[lo:hi].tobytes(),
                float(chunks.sum[i]),
                float(chunks.min[i]),
                float(chunks.max[i]),
                float(values[hi - 1]),
                codec.PLAIN,
            )
        )
    return rows


def _packed_row(chunk: PackedChunk) -> tuple[object, ...]:
    return (
        chunk.series_id, chunk.start_ms, chunk.end_ms, chunk.count, chunk.interval_ms, None, chunk.blob,
        chunk.sum, chunk.min, chunk.max, chunk.last, codec.PACKED,
    )  # fmt: skip


_TABLES = ("chunks", "block_chunks", "fresh_chunks")

_STARTS_INSIDE = "start_ms >= :start AND start_ms < :end"

_WINDOW_CANDIDATES = (
    "SELECT DISTINCT start_ms / :window FROM stored_chunks WHERE start_ms >= :since AND start_ms < :until AND codec = 0"
)
"""Windows with a plain chunk starting in them (as on PostgreSQL: pieces of a packed chunk stay)."""

_BLOCK_CANDIDATES = (
    "SELECT DISTINCT start_ms / :window FROM fresh_chunks WHERE start_ms >= :since AND start_ms < :until "
    "UNION SELECT DISTINCT start_ms / :window FROM chunks WHERE start_ms >= :since AND start_ms < :until AND codec = 0"
)
"""Blocks with anything still fresh or plain; packed chunks already in `chunks` stay as they are,
so an upgrade rewrites no history."""

_WINDOW_SERIES = f"SELECT DISTINCT series_id FROM stored_chunks WHERE {_STARTS_INSIDE} AND codec = 0"
"""A window's series with a plain chunk starting in it."""

_BLOCK_SERIES = (
    f"SELECT series_id FROM fresh_chunks WHERE {_STARTS_INSIDE} "
    f"UNION SELECT series_id FROM chunks WHERE {_STARTS_INSIDE} AND codec = 0"
)
"""A block's series with any fresh chunk, or a plain one, starting in it."""

_NEWEST = (
    " UNION ALL ".join(
        f"SELECT * FROM (SELECT end_ms, last, start_ms FROM {table} WHERE series_id = ? ORDER BY start_ms DESC LIMIT 1)"
        for table in _TABLES
    )
    + " ORDER BY 3 DESC LIMIT 1"
)
"""A series' newest chunk: each table's newest by its own index, not a sort of the view's rows."""
_INCREMENTAL = 2
"""PRAGMA auto_vacuum's value for INCREMENTAL."""

COMPACTION_SERIES_PER_TRANSACTION = 2000
"""Compaction rewrites a window this many series at a time, so memory stays bounded."""


class SqliteSampleStore(DerivedReads):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _cursor(self, commit: bool = False) -> AbstractContextManager[Any]:
        return pooled_cursor(self._engine, commit)

    def append(self, chunks: ChunkColumns) -> None:
        if not len(chunks):
            return
        with self._cursor(commit=True) as cursor:
            cursor.executemany(_INSERT.format(table="fresh_chunks"), _rows(chunks))

    def _select(self, series_ids: Sequence[int], sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Rows of `sql` (which filters on `series_id IN ids`) for the series, 500 at a time."""
        found: list[tuple[Any, ...]] = []
        with self._cursor() as cursor:
            for offset in range(0, len(series_ids), 500):
                ids = list(series_ids[offset : offset + 500])
                marks = ",".join(str(int(i)) for i in ids)
                cursor.execute(sql.replace("(ids)", f"({marks})"), params)
                found.extend(cursor.fetchall())
        return found

    def _samples(
        self, series_ids: Sequence[int], start_ms: int, end_ms: int, exclude_whole: dict[str, int] | None
    ) -> tuple[list[StoredRow], list[tuple[Any, ...]]]:
        """Decodable rows of the chunks overlapping [start_ms, end_ms] and, when `exclude_whole`
        gives a bucketing, the summary rows of the chunks that lie inside one bucket instead."""
        params: dict[str, Any] = {"end": end_ms, "lo": start_ms - MAX_STORED_SPAN_MS, "from": start_ms}
        whole = "0"
        if exclude_whole is not None:
            params.update(exclude_whole)
            whole = _WHOLE
        rows = self._select(
            series_ids,
            f"SELECT series_id, start_ms, n, interval_ms, codec, CASE WHEN {whole} THEN NULL ELSE offsets END, "
            f"CASE WHEN {whole} THEN NULL ELSE vals END, {whole}, end_ms, sum, min, max, last FROM stored_chunks "
            f"WHERE series_id IN (ids) AND {_IN_RANGE} ORDER BY series_id, start_ms",
            params,
        )
        decodable = [row[:7] for row in rows if not row[7]]
        summaries = [row for row in rows if row[7]]
        return decodable, summaries

    def _decoded(self, rows: list[StoredRow], groups: dict[int, int] | None = None) -> Samples:
        _, series, times, values = decode_rows(rows, _PLAIN)
        if groups is None:
            group = series
        else:
            lookup = np.array(list(groups.items()), dtype=np.int64).reshape(-1, 2)
            order = np.argsort(lookup[:, 0])
            group = lookup[order, 1][np.searchsorted(lookup[order, 0], series)]
        return Samples(series, group, times, values)

    def _points_within(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> int:
        total = 0
        with self._cursor() as cursor:
            for offset in range(0, len(series_ids), 500):
                ids = list(series_ids[offset : offset + 500])
                cursor.execute(
                    f"SELECT coalesce(sum(n), 0) FROM stored_chunks WHERE series_id IN ({','.join('?' * len(ids))}) "
                    "AND start_ms >= ? AND end_ms <= ?",
                    [*ids, start_ms, end_ms],
                )
                total += int(cursor.fetchone()[0])
        return total

    def raw_samples(
        self, series_ids: Sequence[int], start_ms: int, end_ms: int, refuse_above: int | None = None
    ) -> Samples:
        if refuse_above is not None and (inside := self._points_within(series_ids, start_ms, end_ms)) > refuse_above:
            raise TooManyPoints(inside)
        rows, _ = self._samples(series_ids, start_ms, end_ms, None)
        return self._decoded(rows).within(start_ms, end_ms)

    def aggregation_input(
        self,
        groups: dict[int, int],
        read_from_ms: int,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        aggregation: Aggregation,
    ) -> AggregationInput:
        if aggregation is Aggregation.RATE:
            rows, _ = self._samples(list(groups), read_from_ms, end_ms, None)
            return AggregationInput(self._decoded(rows, groups))
        rows, whole = self._samples(list(groups), read_from_ms, end_ms, {"start": start_ms, "step": step_ms})
        summaries = Summaries.from_rows(
            [(groups[r[0]], r[1], r[8], r[2], _nan(r[9]), _nan(r[10]), _nan(r[11]), _nan(r[12])) for r in whole]
        )
        return AggregationInput(self._decoded(rows, groups), summaries)

    def series_with_samples(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> set[int]:
        params = {"end": end_ms, "lo": start_ms - MAX_STORED_SPAN_MS, "from": start_ms}
        sql = f"SELECT DISTINCT series_id FROM stored_chunks WHERE series_id IN (ids) AND {_IN_RANGE}"
        return {int(row[0]) for row in self._select(sorted(set(series_ids)), sql, params)}

    def latest(self, series_ids: Sequence[int]) -> dict[int, tuple[int, float]]:
        latest: dict[int, tuple[int, float]] = {}
        with self._cursor() as cursor:
            for series_id in series_ids:
                cursor.execute(_NEWEST, (series_id,) * len(_TABLES))
                row = cursor.fetchone()
                if row is not None:
                    latest[series_id] = (row[0], _nan(row[1]))
        return latest

    def drop_older_than(self, cutoff_ms: int) -> int:
        removed = 0
        with self._cursor(commit=True) as cursor:
            for table in _TABLES:
                cursor.execute(f"DELETE FROM {table} WHERE end_ms < ?", (cutoff_ms,))
                removed += int(cursor.rowcount)
        if removed:
            self._release_space()
        return removed

    def compact(self, window_ms: int, since_ms: int, until_ms: int) -> int:
        """Compaction in two tiers, as on PostgreSQL (see its store): closed windows of a block
        still open are packed within the fresh table, closed blocks into `block_chunks`; then the
        pages freed go back to the file system. Returns the number of chunk rows merged away."""
        span = {"since": since_ms, "until": until_ms}
        removed = 0
        # Blocks first: the samples of their straddling chunks past the block's end go back to the
        # fresh table, to be packed by the windows' pass right after.
        for candidates, length, select_series, into in (
            (_BLOCK_CANDIDATES, PACKED_BLOCK_MS, _BLOCK_SERIES, "block_chunks"),
            (_WINDOW_CANDIDATES, window_ms, _WINDOW_SERIES, "fresh_chunks"),
        ):
            with self._cursor() as cursor:
                cursor.execute(candidates, {**span, "window": length})
                windows = sorted(row[0] for row in cursor.fetchall())
            for window in windows:
                start, end = window * length, (window + 1) * length
                if compaction_due(start, end, until_ms, block=into == "block_chunks"):
                    removed += self._compact_window(start, end, select_series, into)
        self._release_space()
        return removed

    def _compact_window(self, start: int, end: int, select_series: str, into: str) -> int:
        """Rewrite the chunks starting in [start, end) of the series `select_series` finds as one
        packed chunk per series in table `into`; the samples of chunks reaching past `end` go back
        to the fresh table, plain."""
        with self._cursor() as cursor:
            cursor.execute(select_series, {"start": start, "end": end})
            series = [row[0] for row in cursor.fetchall()]
            cursor.execute("PRAGMA page_size")
            max_blob = _inline_blob_bytes(int(cursor.fetchone()[0]), into)
        removed = 0
        for offset in range(0, len(series), COMPACTION_SERIES_PER_TRANSACTION):
            ids = ",".join(str(i) for i in series[offset : offset + COMPACTION_SERIES_PER_TRANSACTION])
            with self._cursor(commit=True) as cursor:
                victims: dict[str, list[Any]] = {}
                for table in _TABLES:
                    cursor.execute(
                        f"SELECT series_id, start_ms, n, interval_ms, codec, offsets, vals FROM {table} "
                        f"WHERE series_id IN ({ids}) AND {_STARTS_INSIDE}",
                        {"start": start, "end": end},
                    )
                    victims[table] = cursor.fetchall()
                rows = sorted([row for found in victims.values() for row in found], key=lambda row: (row[0], row[1]))
                if not rows:
                    continue
                _, series_ids, times, values = decode_rows(rows, _PLAIN)
                packed, beyond = rewrite_window(series_ids, times, values, start, end, max_blob)
                for table, found in victims.items():
                    cursor.executemany(
                        f"DELETE FROM {table} WHERE series_id = ? AND start_ms = ?", [(v[0], v[1]) for v in found]
                    )
                cursor.executemany(_INSERT.format(table=into), [_packed_row(c) for c in packed])
                # The part of straddling chunks past the window: plain again, packed with its own window.
                cursor.executemany(_INSERT.format(table="fresh_chunks"), _rows(beyond))
            removed += max(0, len(rows) - len(packed) - len(beyond))  # pieces can outnumber the rows
        return removed

    def _release_space(self) -> None:
        """Give the pages that compaction and retention freed back to the file system, so the
        file's size follows the data (deleted rows otherwise leave free pages inside it), and
        empty the write-ahead log into the file. A
        database created before incremental vacuum was the default is converted once."""
        with self._cursor() as cursor:
            cursor.execute("PRAGMA auto_vacuum")
            mode = int(cursor.fetchone()[0])
        connection = self._engine.raw_connection()
        try:
            raw: Any = connection.driver_connection  # sqlite3's own, for executescript
            if mode != _INCREMENTAL:
                event(_log, "converting the database to incremental vacuum (once; rewrites the file)")
                raw.execute(f"PRAGMA auto_vacuum = {_INCREMENTAL}")
                raw.execute("VACUUM")
            # executescript steps the pragma to its end; execute() would free a single page.
            raw.executescript("PRAGMA incremental_vacuum;")
            # And the write-ahead log, which otherwise keeps its largest size for good.
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            connection.close()
