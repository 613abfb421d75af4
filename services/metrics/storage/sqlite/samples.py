"""The embedded sample store: chunks in SQLite, arrays packed as little-endian BLOBs.

SQLite cannot unnest arrays, so aggregations decode the selected chunks in
this process with services.metrics.query.aggregate, still skipping the decode of
chunks whose pre-computed summaries answer the bucket. SQLite turns NaN into
NULL in REAL columns, so NULL summaries read back as NaN.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from sqlalchemy import Engine

from services.common.db import pooled_cursor
from services.metrics.domain import Aggregation
from services.metrics.query import aggregate as engine_py
from services.metrics.storage.chunks import MAX_CHUNK_SPAN_MS, Chunk, ChunkColumns, make_chunks
from services.metrics.storage.ports import Points

_LITTLE = sys.byteorder == "little"


def _unpack(kind: str, blob: bytes) -> list[Any]:
    packed = array(kind)
    packed.frombytes(blob)
    if not _LITTLE:
        packed.byteswap()
    return packed.tolist()


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


_COLUMNS = "series_id, start_ms, end_ms, n, interval_ms, offsets, vals, sum, min, max, last"
"""The SQLite table's columns in the order its rows are read and written here (named in every statement)."""


_INSERT = f"INSERT OR IGNORE INTO chunks ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"


def _rows(chunks: ChunkColumns) -> list[tuple[object, ...]]:
    """One INSERT row per chunk; sample arrays become little-endian BLOBs with one slice each."""
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
            )
        )
    return rows


class SqliteSampleStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _cursor(self, commit: bool = False) -> AbstractContextManager[Any]:
        return pooled_cursor(self._engine, commit)

    def append(self, chunks: ChunkColumns) -> None:
        if not len(chunks):
            return
        with self._cursor(commit=True) as cursor:
            cursor.executemany(_INSERT, _rows(chunks))

    def _chunks(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> dict[int, list[Chunk]]:
        found: dict[int, list[Chunk]] = defaultdict(list)
        with self._cursor() as cursor:
            for offset in range(0, len(series_ids), 500):
                ids = list(series_ids[offset : offset + 500])
                marks = ",".join("?" * len(ids))
                cursor.execute(
                    f"SELECT {_COLUMNS} FROM chunks WHERE series_id IN ({marks}) "
                    "AND start_ms <= ? AND start_ms >= ? AND end_ms >= ? ORDER BY series_id, start_ms",
                    [*ids, end_ms, start_ms - MAX_CHUNK_SPAN_MS, start_ms],
                )
                for row in cursor.fetchall():
                    found[row[0]].append(
                        Chunk(
                            series_id=row[0],
                            start_ms=row[1],
                            end_ms=row[2],
                            interval_ms=row[4],
                            offsets=None if row[5] is None else _unpack("i", row[5]),
                            values=_unpack("d", row[6]),
                            sum=_nan(row[7]),
                            min=_nan(row[8]),
                            max=_nan(row[9]),
                        )
                    )
        return found

    def newest_timestamps(self, series_ids: Sequence[int]) -> dict[int, int]:
        return {series_id: newest for series_id, (newest, _) in self.latest(series_ids).items()}

    def stored_timestamps(self, series_id: int, start_ms: int, end_ms: int) -> set[int]:
        return set(self.raw([series_id], start_ms, end_ms).get(series_id, ([], []))[0])

    def points_within(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> int:
        total = 0
        with self._cursor() as cursor:
            for offset in range(0, len(series_ids), 500):
                ids = list(series_ids[offset : offset + 500])
                cursor.execute(
                    f"SELECT coalesce(sum(n), 0) FROM chunks WHERE series_id IN ({','.join('?' * len(ids))}) "
                    "AND start_ms >= ? AND end_ms <= ?",
                    [*ids, start_ms, end_ms],
                )
                total += int(cursor.fetchone()[0])
        return total

    def raw(self, series_ids: Sequence[int], start_ms: int, end_ms: int) -> dict[int, Points]:
        return {
            series_id: engine_py.points_in_range(chunks, start_ms, end_ms)
            for series_id, chunks in self._chunks(series_ids, start_ms, end_ms).items()
        }

    def aggregate(
        self, groups: dict[int, int], start_ms: int, end_ms: int, step_ms: int, aggregation: Aggregation
    ) -> dict[int, Points]:
        if aggregation is Aggregation.RATE:
            lookbehind = engine_py.rate_lookbehind_ms(step_ms)
            found = self._chunks(list(groups), start_ms - lookbehind, end_ms)
            return engine_py.rate(((groups[sid], chunks) for sid, chunks in found.items()), start_ms, end_ms, step_ms)
        found = self._chunks(list(groups), start_ms, end_ms)
        pairs = ((groups[sid], chunk) for sid, chunks in found.items() for chunk in chunks)
        return engine_py.aggregate(pairs, start_ms, end_ms, step_ms, aggregation)

    def latest(self, series_ids: Sequence[int]) -> dict[int, tuple[int, float]]:
        latest: dict[int, tuple[int, float]] = {}
        with self._cursor() as cursor:
            for series_id in series_ids:
                cursor.execute(
                    "SELECT end_ms, vals FROM chunks WHERE series_id = ? ORDER BY start_ms DESC LIMIT 1", (series_id,)
                )
                row = cursor.fetchone()
                if row is not None:
                    latest[series_id] = (row[0], _unpack("d", row[1])[-1])
        return latest

    def drop_older_than(self, cutoff_ms: int) -> int:
        with self._cursor(commit=True) as cursor:
            cursor.execute("DELETE FROM chunks WHERE end_ms < ?", (cutoff_ms,))
            return int(cursor.rowcount)

    def compact(self, window_ms: int, since_ms: int, until_ms: int) -> int:
        """Merge each series' chunks inside every window (aligned to window_ms) that lies in
        [since_ms, until_ms) into one chunk; returns the number of chunks removed."""
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT series_id, start_ms / ? FROM chunks WHERE start_ms >= ? AND start_ms < ? "
                "GROUP BY series_id, start_ms / ? HAVING count(*) > 1",
                (window_ms, since_ms, until_ms, window_ms),
            )
            candidates = cursor.fetchall()
        removed = 0
        for series_id, window in candidates:
            start, end = window * window_ms, (window + 1) * window_ms
            if end > until_ms:
                continue
            chunks = [
                c
                for c in self._chunks([series_id], start, end).get(series_id, [])
                if start <= c.start_ms and c.end_ms < end
            ]
            if len(chunks) < 2:
                continue
            merged = make_chunks(
                series_id,
                [t for c in chunks for t in c.timestamps()],
                [v for c in chunks for v in c.values],
            )
            with self._cursor(commit=True) as cursor:
                cursor.executemany(
                    "DELETE FROM chunks WHERE series_id = ? AND start_ms = ?", [(series_id, c.start_ms) for c in chunks]
                )
                cursor.executemany(_INSERT, _rows(ChunkColumns.from_chunks(merged)))
            removed += len(chunks) - len(merged)
        return removed
