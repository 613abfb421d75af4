"""The alerts table remembers when a firing alert's condition stopped holding (keep_firing_for),
and a rule's key may be as long as a Prometheus alert name (any length, plus its group where two
rules share a name).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("alerts", sa.Column("keep_firing_since_ms", sa.BigInteger, nullable=True))
    with op.batch_alter_table("alerts") as batch:
        batch.alter_column("rule", type_=sa.Text, existing_type=sa.String(128), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.alter_column("rule", type_=sa.String(128), existing_type=sa.Text, existing_nullable=False)
        batch.drop_column("keep_firing_since_ms")
