"""Chunks as a PostgreSQL binary COPY stream, built as numpy structured arrays.

Binary COPY sends each row as a 16-bit field count followed by every field as
a 32-bit length and its big-endian bytes; arrays carry a small header (ndim,
null flag, element type, length, lower bound) and a length before every
element. Chunks with the same sample count and timestamp form share one row
layout, so each such group is written as one structured array: a few whole-array
assignments, then `tobytes()`, instead of packing every value from Python.
"""

from __future__ import annotations

import functools
import struct

import numpy as np

from services.metrics.storage.chunks import CHUNK_COLUMNS, ChunkColumns

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_INT4_OID = 23
_FLOAT8_OID = 701
_ARRAY_HEADER = 20  # ndim, has-null flag, element type, dimension length, lower bound: 5 x int32


@functools.cache
def _row_dtype(count: int, has_offsets: bool) -> np.dtype:
    """The byte layout of one chunk row with `count` samples, in CHUNK_COLUMNS order."""
    fields: list[tuple] = [("fields", ">i2")]
    for name, kind in (
        ("start_ms", ">i8"), ("end_ms", ">i8"), ("sum", ">f8"), ("min", ">f8"), ("max", ">f8"), ("last", ">f8"),
        ("series_id", ">i4"), ("n", ">i4"), ("interval_ms", ">i4"),
    ):  # fmt: skip
        fields += [(f"{name}_len", ">i4"), (name, kind)]
    if has_offsets:
        element = np.dtype([("len", ">i4"), ("v", ">i4")])
        fields += [("offsets_len", ">i4"), ("offsets_head", ">i4", (5,)), ("offsets", element, (count,))]
    else:
        fields += [("offsets_len", ">i4")]
    element = np.dtype([("len", ">i4"), ("v", ">f8")])
    fields += [("vals_len", ">i4"), ("vals_head", ">i4", (5,)), ("vals", element, (count,))]
    return np.dtype(fields)


def _group_rows(columns: ChunkColumns, chosen: np.ndarray, count: int, has_offsets: bool) -> bytes:
    rows = np.zeros(len(chosen), dtype=_row_dtype(count, has_offsets))
    rows["fields"] = len(CHUNK_COLUMNS)
    bounds = columns.bounds
    first = bounds[:-1][chosen]
    samples = first[:, None] + np.arange(count)
    for name, size in (("start_ms", 8), ("end_ms", 8), ("sum", 8), ("min", 8), ("max", 8), ("last", 8)):
        rows[f"{name}_len"] = size
    rows["start_ms"] = columns.timestamps[first]
    rows["end_ms"] = columns.timestamps[first + count - 1]
    rows["sum"] = columns.sum[chosen]
    rows["min"] = columns.min[chosen]
    rows["max"] = columns.max[chosen]
    rows["last"] = columns.values[first + count - 1]
    for name in ("series_id", "n", "interval_ms"):
        rows[f"{name}_len"] = 4
    rows["series_id"] = columns.series_id[chosen]
    rows["n"] = count
    rows["interval_ms"] = columns.interval_ms[chosen]
    if has_offsets:
        rows["offsets_len"] = _ARRAY_HEADER + 8 * count
        rows["offsets_head"] = (1, 0, _INT4_OID, count, 1)
        rows["offsets"]["len"] = 4
        rows["offsets"]["v"] = columns.timestamps[samples] - columns.timestamps[first][:, None]
    else:
        rows["offsets_len"] = -1  # NULL
    rows["vals_len"] = _ARRAY_HEADER + 12 * count
    rows["vals_head"] = (1, 0, _FLOAT8_OID, count, 1)
    rows["vals"]["len"] = 8
    rows["vals"]["v"] = columns.values[samples]
    return rows.tobytes()


def copy_payload(columns: ChunkColumns) -> bytes:
    """The whole binary COPY stream (signature, rows, trailer) for `columns`."""
    counts = columns.counts
    uneven = (columns.interval_ms == 0) & (counts > 1)
    parts = [SIGNATURE]
    # One structured array per (sample count, timestamp form): usually one or two per batch.
    keys = counts * 2 + uneven
    for key in np.unique(keys).tolist():
        chosen = np.flatnonzero(keys == key)
        parts.append(_group_rows(columns, chosen, key // 2, bool(key % 2)))
    parts.append(TRAILER)
    return b"".join(parts)


COPY_SQL = f"COPY {{table}} ({', '.join(CHUNK_COLUMNS)}) FROM STDIN WITH (FORMAT binary)"
