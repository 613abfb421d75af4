"""Metric families as Prometheus declares them, and which kind of sender owns each series.

- `metric_families`: the metadata remote writers send, keyed by metric family as Prometheus keys it
  (a histogram's `_bucket`, `_sum` and `_count` series are one family of type `histogram`), with
  Prometheus' type names. Descriptive only: samples are stored whatever it says.
- `series.written_by`: 0 when an InfraWatch agent created the series, 1 when a remote-write
  credential did. A series is written only by senders of its owner's kind, so a remote writer
  cannot overwrite (or black out) an agent's series, nor an agent a writer's. Series that exist
  already are classified by the one rule that held for them: every series an agent writes carries
  a `host` label, so a series without one was created by a remote writer.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_families",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("unit", sa.String(64), nullable=False),
        sa.Column("help", sa.String(1024), nullable=False),
    )
    # A constant default: instant on PostgreSQL whatever the size of the table.
    op.execute("ALTER TABLE series ADD COLUMN written_by smallint NOT NULL DEFAULT 0")
    op.execute("""UPDATE series SET written_by = 1 WHERE labels NOT LIKE '%"host":%'""")


def downgrade() -> None:
    op.drop_table("metric_families")
    op.execute("ALTER TABLE series DROP COLUMN written_by")
