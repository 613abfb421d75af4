"""Chunks in two forms: plain (as ingest writes them) and packed (compressed by compaction).

Adds `codec` (0 plain, 1 packed; every existing row is plain) and, on PostgreSQL, the `packed`
blob column beside the plain `vals`/`offsets` arrays. No row is rewritten here, so the migration
is instant on any size of store: readers read both forms, and the metrics service's first
maintenance pass after start packs every closed window, those written before this version
included (see services/metrics/maintenance.py).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Propagates to every day partition; a constant default is stored once, not per row.
        op.execute("ALTER TABLE chunks ADD COLUMN codec smallint NOT NULL DEFAULT 0")
        op.execute("ALTER TABLE chunks ADD COLUMN packed bytea")
        op.execute("ALTER TABLE chunks ALTER COLUMN vals DROP NOT NULL")
    else:
        op.execute("ALTER TABLE chunks ADD COLUMN codec INTEGER NOT NULL DEFAULT 0")


def downgrade() -> None:
    raise NotImplementedError("packed chunks cannot be turned back into the plain form by a migration")
