"""Create metric_names, series and the chunked sample store.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# 8-byte columns first, then 4-byte ones, then the arrays: PostgreSQL aligns each column, so
# this order wastes no padding bytes in a row that is stored once per chunk.
POSTGRES_CHUNKS = """
CREATE TABLE chunks (
    start_ms bigint NOT NULL,
    end_ms bigint NOT NULL,
    sum double precision NOT NULL,
    min double precision NOT NULL,
    max double precision NOT NULL,
    last double precision NOT NULL,
    series_id integer NOT NULL,
    n integer NOT NULL,
    interval_ms integer NOT NULL,
    offsets integer[],
    vals double precision[] NOT NULL,
    PRIMARY KEY (series_id, start_ms)
) PARTITION BY RANGE (start_ms)
"""

SQLITE_CHUNKS = """
CREATE TABLE chunks (
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
    PRIMARY KEY (series_id, start_ms)
) WITHOUT ROWID
"""


def upgrade() -> None:
    op.create_table(
        "metric_names",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("type", sa.SmallInteger, nullable=False),
        sa.Column("unit", sa.String(64), nullable=False),
        sa.Column("help", sa.String(1024), nullable=False),
    )
    op.create_table(
        "series",
        sa.Column("series_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("labels_hash", sa.String(32), nullable=False, unique=True),
        sa.Column("metric_name", sa.String(128), nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("agent_id", sa.String(36), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_series_metric_name", "series", ["metric_name"])
    op.execute(POSTGRES_CHUNKS if op.get_bind().dialect.name == "postgresql" else SQLITE_CHUNKS)


def downgrade() -> None:
    op.drop_table("chunks")
    op.drop_table("series")
    op.drop_table("metric_names")
