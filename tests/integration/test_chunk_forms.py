"""Issue 14: chunks in two forms. Data stored by schema 0001 (plain arrays, no `codec` column) is
read after the upgrade and packed by the first maintenance pass, with every answer unchanged; a
chunk that cannot be decoded is
reported as DATA_LOSS naming the chunk, never INTERNAL. (The codec itself: tests/unit/test_chunk_codec.py.)"""

from __future__ import annotations

import math
import random
import struct

import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration

from infrawatch.metrics.v1 import metrics_pb2 as pb
from services.common.clock import wall_clock_ms
from services.common.db import is_postgres, migrate, pooled_cursor
from services.common.timestamps import to_timestamp
from services.metrics.__main__ import MIGRATIONS, VERSION_TABLE
from services.metrics.domain import Aggregation, labels_json
from services.metrics.maintenance import MaintenancePolicy, run_maintenance
from services.metrics.query.aggregate import aggregate_stored
from services.metrics.storage import codec
from services.metrics.storage.chunks import PACKED_BLOCK_MS, summarise
from services.metrics.storage.postgres.samples import DAY_MS, PostgresSampleStore
from services.metrics.storage.series_sql import labels_hash
from services.metrics.storage.sqlite.samples import SqliteSampleStore

HOUR = 3_600_000


def _series_as_version_0001(engine, labels, now_ms: int) -> int:
    """A series row exactly as schema 0001 stored it (no owner kind yet)."""
    text = labels_json(labels)
    mark = "%s" if is_postgres(engine) else "?"
    with pooled_cursor(engine, commit=True) as cursor:
        cursor.execute(
            "INSERT INTO series (labels_hash, metric_name, labels, agent_id, created_ms) "
            f"VALUES ({', '.join([mark] * 5)}) RETURNING series_id",
            (labels_hash(labels), "legacy", text, "agent-1", now_ms),
        )
        return int(cursor.fetchone()[0])


def _write_as_version_0001(engine, series_id: int, times: list[int], values: list[float]) -> None:
    """One chunk exactly as schema 0001 stored it, written with that schema's columns only."""
    start, end = times[0], times[-1]
    total, low, high = summarise(values)
    regular = len(set(np.diff(times).tolist())) <= 1
    interval = times[1] - times[0] if regular and len(times) > 1 else 0
    offsets = None if regular else [t - start for t in times]
    with pooled_cursor(engine, commit=True) as cursor:
        if is_postgres(engine):
            day = start // DAY_MS
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS chunks_d{day} PARTITION OF chunks "
                f"FOR VALUES FROM ({day * DAY_MS}) TO ({(day + 1) * DAY_MS})"
            )
            cursor.execute(
                "INSERT INTO chunks (start_ms, end_ms, sum, min, max, last, series_id, n, interval_ms, offsets, vals) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (start, end, total, low, high, values[-1], series_id, len(values), interval, offsets, values),
            )
        else:
            cursor.execute(
                "INSERT INTO chunks (series_id, start_ms, end_ms, n, interval_ms, offsets, vals, sum, min, max, last) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    series_id, start, end, len(values), interval,
                    None if offsets is None else struct.pack(f"<{len(offsets)}i", *offsets),
                    struct.pack(f"<{len(values)}d", *values), total, low, high, values[-1],
                ),
            )  # fmt: skip


def _forms(engine) -> dict[int, int]:
    with pooled_cursor(engine) as cursor:
        cursor.execute("SELECT codec, count(*) FROM stored_chunks GROUP BY codec")
        return {int(form): int(count) for form, count in cursor.fetchall()}


def _same(left, right) -> bool:
    """Equal answers, NaN equal to NaN."""
    if left.keys() != right.keys():
        return False
    for key in left:
        (lt, lv), (rt, rv) = left[key], right[key]
        if lt != rt or not all((a == b) or (math.isnan(a) and math.isnan(b)) for a, b in zip(lv, rv, strict=True)):
            return False
    return True


def test_data_stored_by_schema_0001_is_read_after_the_upgrade_and_packed_by_maintenance(engine):
    migrate(engine, MIGRATIONS, VERSION_TABLE, revision="0001")
    now = wall_clock_ms()
    t0 = (now // HOUR - 5) * HOUR
    series_a, series_b = (_series_as_version_0001(engine, (("__name__", "legacy"), ("node", n)), now) for n in "ab")
    rng = random.Random(7)
    for batch in range(12):  # two closed hours of 10-sample chunks, evenly spaced and jittered
        times = [t0 + (batch * 10 + i) * 60_000 for i in range(10)]
        _write_as_version_0001(engine, series_a, times, [round(rng.uniform(0, 100), 1) for _ in times])
        jittered = [t + rng.randint(0, 999) for t in times]
        _write_as_version_0001(engine, series_b, jittered, [float(batch * 10 + i) for i in range(10)])
    _write_as_version_0001(engine, series_b, [t0 + 130 * 60_000], [math.nan])

    migrate(engine, MIGRATIONS, VERSION_TABLE)
    store = PostgresSampleStore(engine) if is_postgres(engine) else SqliteSampleStore(engine)
    assert _forms(engine) == {codec.PLAIN: 25}

    def answers() -> list[dict]:
        wide = (t0 - HOUR, t0 + 3 * HOUR)
        return [
            store.raw([series_a, series_b], *wide),
            *(
                aggregate_stored(store, {series_a: 0, series_b: 1}, *wide, 300_000, aggregation)
                for aggregation in (Aggregation.AVG, Aggregation.MAX, Aggregation.LAST, Aggregation.RATE)
            ),
        ]

    before = answers()
    assert len(before[0][series_a][0]) == 120 and len(before[0][series_b][0]) == 121

    policy = MaintenancePolicy(retention_ms=30 * DAY_MS, compaction_window_ms=HOUR, compaction_delay_ms=600_000)
    run_maintenance(store, policy, now, everything=True)

    forms = _forms(engine)
    assert forms.get(codec.PLAIN, 0) == 0, forms  # every closed window was packed
    assert forms[codec.PACKED] <= 6  # one chunk per series per hour
    after = answers()
    assert all(_same(b, a) for b, a in zip(before, after, strict=True))


@pytest.fixture
def packed_hour(metrics_harness, metrics_stub, agent_token) -> int:
    t0 = (metrics_harness.clock() // HOUR - 2) * HOUR
    for sequence in (1, 2):
        batch = pb.MetricBatch(
            sequence=sequence,
            series=[
                pb.SeriesSamples(
                    labels=[pb.Label(name="__name__", value="fragile")],
                    start_ms=t0 + (sequence - 1) * 600_000,
                    interval_ms=10_000,
                    values=[float(i) for i in range(60)],
                )
            ],
        )
        (ack,) = metrics_stub.StreamMetrics(
            iter([batch]), metadata=(("authorization", f"Bearer {agent_token}"),), timeout=10
        )
        assert ack.samples_accepted == 60
    # Up to the end of t0's 6-hour block, so the hour is folded with its block whatever the time of day.
    metrics_harness.samples.compact(HOUR, t0 - HOUR, (t0 // PACKED_BLOCK_MS + 1) * PACKED_BLOCK_MS)
    return t0


def test_a_chunk_that_cannot_be_decoded_is_data_loss_naming_it(
    metrics_harness, metrics_stub, metrics_engine, packed_hour
):
    column, table = ("packed", "chunks") if is_postgres(metrics_engine) else ("vals", "block_chunks")
    mark = "%s" if is_postgres(metrics_engine) else "?"
    with pooled_cursor(metrics_engine, commit=True) as cursor:
        cursor.execute(f"SELECT series_id, start_ms, {column} FROM {table} WHERE codec = 1")
        ((series_id, start_ms, blob),) = cursor.fetchall()
        torn = bytes(blob) + bytes(blob)  # a torn write: the frame followed by garbage
        cursor.execute(
            f"UPDATE {table} SET {column} = {mark} WHERE series_id = {mark} AND start_ms = {mark}",
            (torn, series_id, start_ms),
        )
    request = pb.QueryRangeRequest(
        selector=pb.Selector(selector="fragile"),
        start=to_timestamp(packed_hour),
        end=to_timestamp(packed_hour + HOUR - 1),
        step=Duration(seconds=300),
        aggregation=pb.AGGREGATION_AVG,
    )
    with pytest.raises(grpc.RpcError) as refused:
        metrics_stub.QueryRange(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.DATA_LOSS
    assert "cannot be read" in refused.value.details() and "series" in refused.value.details()


def test_a_chunk_written_twice_in_a_race_leaves_the_others_of_its_write_stored(metrics_engine):
    """Two streams of one host sending one batch at once can both pass the duplicate filter; the
    second write must store what is new beside it, not fail the whole group commit."""
    from services.metrics.storage.chunks import ChunkColumns, make_chunks
    from services.metrics.storage.series_sql import SqlSeriesStore

    store = PostgresSampleStore(metrics_engine) if is_postgres(metrics_engine) else SqliteSampleStore(metrics_engine)
    made = SqlSeriesStore(metrics_engine).create_series([((("__name__", "race"), ("n", n)), "agent") for n in "ab"], 0)
    first, second = (made[(("__name__", "race"), ("n", n))].series_id for n in "ab")
    now = wall_clock_ms()
    original = ChunkColumns.from_chunks(make_chunks(first, [now - 2000, now - 1000], [1.0, 2.0]))
    store.append(original)
    raced = ChunkColumns.concat([original, ChunkColumns.from_chunks(make_chunks(second, [now - 1000], [5.0]))])
    store.append(raced)  # the duplicate of `original` beside a new chunk of another series
    found = store.raw([first, second], now - 10_000, now)
    assert found[first] == ([now - 2000, now - 1000], [1.0, 2.0])
    assert found[second] == ([now - 1000], [5.0])
