"""Fresh chunks in a table of their own, which compaction empties and releases whole.

Ingest's plain chunks (~25-60 bytes a sample) used to share `chunks` with the packed ones
compaction writes; compaction deleted them, and on PostgreSQL the space stayed with the table as
dead tuples until a VACUUM FULL (27.6 bytes a sample after compaction, 1.99 after it). Now:

- `fresh_chunks`: what ingest writes, the same columns as `chunks`. On PostgreSQL it is
  partitioned by hour of `start_ms` (`fresh_h<hour>`, created on demand); once compaction has
  folded every chunk of a closed hour, that partition is empty and is dropped, which gives its
  space back to the file system at once. On SQLite it is one table whose freed pages go back to
  the file system by incremental vacuum after every compaction pass.
- `chunks`: what compaction writes (packed), plus any plain chunk stored before this version
  (compacted by the first maintenance pass, as before).
- `stored_chunks`: a view of both, which every read goes through (the planner pushes each
  read's conditions into both sides, so each is still an index lookup).

Nothing is moved: existing rows stay in `chunks`, so the migration is instant on any size.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

POSTGRES = (
    "CREATE TABLE fresh_chunks (LIKE chunks INCLUDING DEFAULTS) PARTITION BY RANGE (start_ms)",
    "ALTER TABLE fresh_chunks ADD PRIMARY KEY (series_id, start_ms)",
    "CREATE VIEW stored_chunks AS SELECT * FROM chunks UNION ALL SELECT * FROM fresh_chunks",
)

SQLITE = (
    """CREATE TABLE fresh_chunks (
        series_id INTEGER NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        n INTEGER NOT NULL,
        interval_ms INTEGER NOT NULL,
        offsets BLOB,
        vals BLOB NOT NULL,
        sum REAL,
        min REAL,
        max REAL,
        last REAL,
        codec INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (series_id, start_ms)
    ) WITHOUT ROWID""",
    "CREATE VIEW stored_chunks AS SELECT series_id, start_ms, end_ms, n, interval_ms, offsets, vals, sum, min, max, "
    "last, codec FROM chunks UNION ALL SELECT series_id, start_ms, end_ms, n, interval_ms, offsets, vals, sum, min, "
    "max, last, codec FROM fresh_chunks",
)


def upgrade() -> None:
    for statement in POSTGRES if op.get_bind().dialect.name == "postgresql" else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("fresh chunks cannot be moved back by a migration")
