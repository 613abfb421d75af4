"""Compaction's first tier in a table of its own on PostgreSQL, released whole per 6-hour block.

Compaction packs each closed hour's fresh chunks first (one packed chunk per series and hour, so
queries of the last hours read few rows) and, once the hour's 6-hour block has closed, folds them
into one packed chunk per series and block in `chunks` (a chunk row costs ~250 bytes whatever it
holds: ~1 byte a sample for an hour, 0.2 for six). Where the hourly chunks wait matters on
PostgreSQL, which gives the space of deleted rows back only by VACUUM FULL: in `fresh_chunks`
they would keep each hour's partition, and the dead plain rows in it, alive for six hours; in
`chunks` they would leave dead rows behind for good. So they go to `recent_chunks`, partitioned by
block (`recent_b<block>`), whose partitions are dropped once their block is folded.

SQLite keeps the hourly chunks in `fresh_chunks`: its freed pages go back to the file system by
incremental vacuum. Nothing is moved: the migration is instant on any size.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

POSTGRES = (
    # A packed blob is zstd already: PostgreSQL's own compression would only spend time failing.
    "ALTER TABLE chunks ALTER COLUMN packed SET STORAGE EXTERNAL",
    "CREATE TABLE recent_chunks (LIKE chunks INCLUDING DEFAULTS INCLUDING STORAGE) PARTITION BY RANGE (start_ms)",
    "ALTER TABLE recent_chunks ADD PRIMARY KEY (series_id, start_ms)",
    "CREATE OR REPLACE VIEW stored_chunks AS SELECT * FROM chunks UNION ALL SELECT * FROM recent_chunks "
    "UNION ALL SELECT * FROM fresh_chunks",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES:
            op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("recent chunks cannot be moved back by a migration")
