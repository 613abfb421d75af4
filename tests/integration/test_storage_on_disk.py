"""Issue 27: storage that stays small on disk, on both stores. Batches that straddle compaction
windows end up packed like any other, first per hour (in the fresh table) and, once their 6-hour
block has closed, as one packed chunk per series and block in `chunks`; then the space the fresh
chunks took goes back to the file system (PostgreSQL drops the hours' partitions, SQLite vacuums
the freed pages) with nothing run by hand; late data for a released hour is still stored."""

from __future__ import annotations

import random

import pytest

from services.common.clock import wall_clock_ms
from services.common.db import is_postgres, pooled_cursor
from services.metrics.storage.chunks import PACKED_BLOCK_MS, ChunkColumns, make_chunks
from services.metrics.storage.postgres.samples import PostgresSampleStore
from services.metrics.storage.series_sql import SqlSeriesStore
from services.metrics.storage.sqlite.samples import SqliteSampleStore

HOUR = 3_600_000
INTERVAL = 15_000
PER_BATCH = 7  # 105 s a batch, so batches fall across every hour boundary
SERIES = 20


@pytest.fixture
def store(metrics_engine):
    return PostgresSampleStore(metrics_engine) if is_postgres(metrics_engine) else SqliteSampleStore(metrics_engine)


def _series(engine, count: int, name: str) -> list[int]:
    made = SqlSeriesStore(engine).create_series(
        [((("__name__", name), ("n", str(n))), "agent") for n in range(count)], 0
    )
    return sorted(row.series_id for row in made.values())


def _write_batches(store, series: list[int], first: int, last: int) -> dict[int, tuple[list[int], list[float]]]:
    """Agent-like batches (one chunk per series per batch) from `first` to before `last`."""
    written: dict[int, tuple[list[int], list[float]]] = {s: ([], []) for s in series}
    for begin in range(first, last, PER_BATCH * INTERVAL):
        times = [t for t in range(begin, begin + PER_BATCH * INTERVAL, INTERVAL) if t < last]
        chunks = []
        for s in series:
            values = [float((t // INTERVAL) * (s + 1) % 997) for t in times]
            chunks += make_chunks(s, times, values)
            written[s][0].extend(times)
            written[s][1].extend(values)
        store.append(ChunkColumns.from_chunks(chunks))
    return written


def _block_table(engine) -> str:
    """Where a closed block's packed chunks go: `chunks` on PostgreSQL, `block_chunks` on SQLite."""
    return "chunks" if is_postgres(engine) else "block_chunks"


def _past_block() -> int:
    """The start of a 6-hour block that closed a while ago (tests choose which windows are closed)."""
    return (wall_clock_ms() // PACKED_BLOCK_MS - 2) * PACKED_BLOCK_MS


def _forms_in(engine, start: int, end: int, table: str = "stored_chunks") -> dict[int, tuple[int, int]]:
    """codec → (chunks, samples) of the chunks starting in [start, end)."""
    mark = "%s" if is_postgres(engine) else "?"
    with pooled_cursor(engine) as cursor:
        cursor.execute(
            f"SELECT codec, count(*), sum(n) FROM {table} WHERE start_ms >= {mark} AND start_ms < {mark} "
            "GROUP BY codec",
            (start, end),
        )
        return {int(form): (int(count), int(total)) for form, count, total in cursor.fetchall()}


def _fresh_space(engine) -> tuple[int, int]:
    """PostgreSQL: (fresh partitions, bytes they hold); SQLite: (free pages in the file, page size)."""
    with pooled_cursor(engine) as cursor:
        if is_postgres(engine):
            cursor.execute(
                "SELECT count(*), coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
                "WHERE inhparent = 'fresh_chunks'::regclass"
            )
            count, size = cursor.fetchone()
            return int(count), int(size)
        cursor.execute("PRAGMA freelist_count")
        free = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA page_size")
        return free, int(cursor.fetchone()[0])


def test_batches_that_straddle_windows_are_packed_whole_and_answers_do_not_change(metrics_engine, store):
    series = _series(metrics_engine, SERIES, "straddled")
    t0 = _past_block() + HOUR
    # Three closed hours and a bit of a fourth, beginning 40 s before an hour boundary; the
    # block they lie in is still open as far as compaction is told, so this is the first tier.
    first, closed_until = t0 - 40_000, t0 + 3 * HOUR
    written = _write_batches(store, series, first, closed_until + 20 * 60_000)
    before = store.raw(series, t0 - HOUR, t0 + 5 * HOUR)

    store.compact(HOUR, t0 - HOUR, closed_until)

    assert store.raw(series, t0 - HOUR, t0 + 5 * HOUR) == before
    assert {s: before[s] for s in series} == written
    for hour in range(-1, 3):
        start, end = t0 + hour * HOUR, t0 + (hour + 1) * HOUR
        expected = sum(1 for s in series for t in written[s][0] if start <= t < end)
        # Every sample of a closed window is in one packed chunk per series, none left plain.
        assert _forms_in(metrics_engine, start, end) == {1: (SERIES, expected)}, hour
    # The hour still open keeps its fresh chunks, and the part of the straddling batch that
    # reached into it was written back there, so nothing was lost.
    open_hour = _forms_in(metrics_engine, closed_until, closed_until + HOUR)
    assert set(open_hour) == {0}
    assert open_hour[0][1] == sum(1 for s in series for t in written[s][0] if t >= closed_until)


def test_a_closed_block_becomes_one_packed_chunk_per_series_and_answers_do_not_change(metrics_engine, store):
    series = _series(metrics_engine, SERIES, "blocked")
    block = _past_block()
    # From 40 s before the block (the previous block's last hour) to 20 minutes past its end.
    written = _write_batches(store, series, block - 40_000, block + PACKED_BLOCK_MS + 20 * 60_000)
    store.compact(HOUR, block - HOUR, block + 3 * HOUR)  # the first tier on the way, as in a service
    before = store.raw(series, block - HOUR, block + PACKED_BLOCK_MS + HOUR)

    store.compact(HOUR, block - HOUR, block + PACKED_BLOCK_MS + HOUR)

    assert store.raw(series, block - HOUR, block + PACKED_BLOCK_MS + HOUR) == before
    assert {s: before[s] for s in series} == written
    inside = sum(1 for s in series for t in written[s][0] if block <= t < block + PACKED_BLOCK_MS)
    # One packed chunk per series in the blocks' table, and nothing of the block anywhere else.
    blocks = _block_table(metrics_engine)
    assert _forms_in(metrics_engine, block, block + PACKED_BLOCK_MS, blocks) == {1: (SERIES, inside)}
    assert _forms_in(metrics_engine, block, block + PACKED_BLOCK_MS) == {1: (SERIES, inside)}
    # The hour after the block is packed by the first tier; the block's straddling batches'
    # samples past its end were written back fresh and packed with that hour.
    after = _forms_in(metrics_engine, block + PACKED_BLOCK_MS, block + PACKED_BLOCK_MS + HOUR)
    assert after == {1: (SERIES, sum(1 for s in series for t in written[s][0] if t >= block + PACKED_BLOCK_MS))}
    assert _forms_in(metrics_engine, block + PACKED_BLOCK_MS, block + PACKED_BLOCK_MS + HOUR, blocks) == {}


def test_compaction_gives_the_space_of_fresh_chunks_back_with_nothing_run_by_hand(metrics_engine, store):
    series = _series(metrics_engine, SERIES, "released")
    t0 = _past_block()
    _write_batches(store, series, t0 - 40_000, t0 + 3 * HOUR)
    if is_postgres(metrics_engine):
        partitions, size = _fresh_space(metrics_engine)
        assert partitions == 4 and size > 0  # the hour before t0 and the three after it

    store.compact(HOUR, t0 - HOUR, t0 + PACKED_BLOCK_MS)

    if is_postgres(metrics_engine):
        assert _fresh_space(metrics_engine) == (0, 0)  # every closed hour's partition dropped
    else:
        free, _ = _fresh_space(metrics_engine)
        assert free == 0  # the pages the fresh chunks took are no longer in the file
    assert _forms_in(metrics_engine, t0 - HOUR, t0 + 3 * HOUR).keys() == {1}


def test_late_data_for_a_released_hour_is_stored_and_packed_by_the_next_pass(metrics_engine, store):
    series = _series(metrics_engine, 3, "late")
    t0 = _past_block()
    _write_batches(store, series[:2], t0, t0 + HOUR)
    store.compact(HOUR, t0 - HOUR, t0 + PACKED_BLOCK_MS)
    if is_postgres(metrics_engine):
        assert _fresh_space(metrics_engine)[0] == 0

    # A buffered agent's samples for the hour whose fresh partition was just released.
    late = [t0 + 60_000, t0 + 75_000]
    store.append(ChunkColumns.from_chunks(make_chunks(series[2], late, [1.0, 2.0])))
    assert store.raw([series[2]], t0, t0 + HOUR)[series[2]] == (late, [1.0, 2.0])

    store.compact(HOUR, t0 - HOUR, t0 + PACKED_BLOCK_MS)
    assert store.raw([series[2]], t0, t0 + HOUR)[series[2]] == (late, [1.0, 2.0])
    assert _forms_in(metrics_engine, t0, t0 + HOUR) == {1: (3, 2 * 240 + 2)}  # a packed chunk per series
    if is_postgres(metrics_engine):
        assert _fresh_space(metrics_engine)[0] == 0


def _made_earlier(path):
    """A SQLite metrics database as every earlier version made it (4 KiB pages, no auto_vacuum),
    migrated to this version."""
    import sqlite3

    from services.common.db import create_db_engine, migrate
    from services.metrics.__main__ import MIGRATIONS, VERSION_TABLE

    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE made_earlier (x INTEGER)")
    engine = create_db_engine(f"sqlite:///{path}")
    migrate(engine, MIGRATIONS, VERSION_TABLE)
    return engine


def test_a_sqlite_database_made_before_incremental_vacuum_is_converted_by_the_first_pass(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    engine = _made_earlier(path)  # no auto_vacuum
    store = SqliteSampleStore(engine)
    series = _series(engine, 5, "converted")
    t0 = _past_block()
    _write_batches(store, series, t0, t0 + 2 * HOUR)
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA auto_vacuum").fetchone()[0] == 0

    store.compact(HOUR, t0 - HOUR, t0 + 2 * HOUR)

    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental from now on
        assert check.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert store.raw(series, t0, t0 + 2 * HOUR)[series[0]][0][:2] == [t0, t0 + INTERVAL]
    engine.dispose()


def test_a_sqlite_database_with_small_pages_stores_a_block_in_pieces_that_fit_their_pages(tmp_path):

    from services.common.db import create_db_engine, migrate
    from services.metrics.__main__ import MIGRATIONS, VERSION_TABLE
    from services.metrics.storage.sqlite.samples import _inline_blob_bytes

    new = create_db_engine(f"sqlite:///{tmp_path / 'new.db'}")
    migrate(new, MIGRATIONS, VERSION_TABLE)
    with pooled_cursor(new) as cursor:
        cursor.execute("PRAGMA page_size")
        assert cursor.fetchone()[0] == 16384  # what a database made now gets
    new.dispose()

    engine = _made_earlier(tmp_path / "old.db")  # 4 KiB pages
    store = SqliteSampleStore(engine)
    series = _series(engine, 3, "pieces")
    block = _past_block()
    rng = random.Random(27)
    times = list(range(block, block + PACKED_BLOCK_MS, INTERVAL))
    written = {s: (times, [rng.random() for _ in times]) for s in series}  # full-precision floats
    store.append(ChunkColumns.from_chunks([c for s in series for c in make_chunks(s, *written[s])]))

    store.compact(HOUR, block - HOUR, block + PACKED_BLOCK_MS + HOUR)

    assert store.raw(series, block, block + PACKED_BLOCK_MS) == written
    with pooled_cursor(engine) as cursor:
        cursor.execute("SELECT series_id, length(vals) FROM block_chunks")
        rows = cursor.fetchall()
        cursor.execute("PRAGMA freelist_count")
        assert cursor.fetchone()[0] == 0
    assert max(length for _, length in rows) <= _inline_blob_bytes(4096, "block_chunks")
    assert len(rows) > len(series)  # a six-hour block did not fit one piece
    engine.dispose()


def test_a_packed_hour_stored_in_pieces_is_not_rewritten_by_every_pass(metrics_engine, store, monkeypatch):
    series = _series(metrics_engine, 1, "pieces")[0]
    t0 = _past_block() + HOUR  # the block stays open: the first tier
    rng = random.Random(5)
    times = list(range(t0, t0 + HOUR, 1_000))
    values = [rng.random() for _ in times]  # full-precision floats at 1 s: ~28 KB an hour, several pieces
    store.append(ChunkColumns.from_chunks(make_chunks(series, times, values)))

    # What a pass reports feeds a counter: more pieces than rows read must not make it negative.
    assert store.compact(HOUR, t0 - HOUR, t0 + HOUR) >= 0
    pieces = _forms_in(metrics_engine, t0, t0 + HOUR)
    assert set(pieces) == {1}
    if not is_postgres(metrics_engine):  # PostgreSQL keeps a long blob whole (TOAST as a last resort)
        assert pieces[1][0] > 1

    from services.metrics.storage import chunks

    encoded = []
    monkeypatch.setattr(chunks.codec, "encode", lambda *args: encoded.append(args) or b"")
    assert store.compact(HOUR, t0 - HOUR, t0 + HOUR) == 0  # nothing plain: left as it is
    assert encoded == []  # not even decoded and packed again the same way
    monkeypatch.undo()
    assert _forms_in(metrics_engine, t0, t0 + HOUR) == pieces
    assert store.raw([series], t0, t0 + HOUR)[series] == (times, values)


def test_a_blocks_chunks_stay_in_their_rows_written_longest_first_on_postgres(postgres_schema_url):
    from services.common.db import create_db_engine, migrate
    from services.metrics.__main__ import MIGRATIONS, VERSION_TABLE

    metrics_engine = create_db_engine(postgres_schema_url)  # PostgreSQL's own TOAST and heap order
    migrate(metrics_engine, MIGRATIONS, VERSION_TABLE)
    store = PostgresSampleStore(metrics_engine)
    series = _series(metrics_engine, SERIES, "rows")
    block = _past_block()
    rng = random.Random(9)
    times = list(range(block, block + PACKED_BLOCK_MS, INTERVAL))
    # Blobs of ~1-4 KB: random walks of growing step sizes, one per series.
    written = {}
    for n, s in enumerate(series):
        level, values = 0.0, []
        for _ in times:
            level += rng.randint(0, 2 ** (n % 12 + 2))
            values.append(level)
        written[s] = (times, values)
    store.append(ChunkColumns.from_chunks([c for s in series for c in make_chunks(s, *written[s])]))

    store.compact(HOUR, block - HOUR, block + PACKED_BLOCK_MS + HOUR)

    assert store.raw(series, block, block + PACKED_BLOCK_MS) == written
    with pooled_cursor(metrics_engine) as cursor:
        cursor.execute("SELECT length(packed) FROM chunks ORDER BY ctid")
        lengths = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "SELECT coalesce(sum(pg_relation_size(c.reltoastrelid)), 0) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'chunks'::regclass"
        )
        toasted = int(cursor.fetchone()[0])
    assert len(lengths) == SERIES and max(lengths) > 2_100  # above the 2 KB TOAST threshold
    assert toasted == 0  # nothing went to TOAST
    assert lengths == sorted(lengths, reverse=True)  # longest first: the heap's pages fill
    metrics_engine.dispose()
