"""Create the alerts, silences and notification_groups tables.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("fingerprint", sa.String(16), primary_key=True),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("labels_json", sa.Text, nullable=False),
        sa.Column("annotations_json", sa.Text, nullable=False),
        sa.Column("value", sa.String(32), nullable=False),
        sa.Column("active_since_ms", sa.BigInteger, nullable=False),
        sa.Column("fired_at_ms", sa.BigInteger),
        sa.Column("resolved_at_ms", sa.BigInteger),
    )
    op.create_index("ix_alerts_rule", "alerts", ["rule"])
    op.create_table(
        "silences",
        sa.Column("silence_id", sa.String(36), primary_key=True),
        sa.Column("matchers_json", sa.Text, nullable=False),
        sa.Column("starts_at_ms", sa.BigInteger, nullable=False),
        sa.Column("ends_at_ms", sa.BigInteger, nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("comment", sa.String(1024), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_silences_ends_at_ms", "silences", ["ends_at_ms"])
    op.create_table(
        "notification_groups",
        sa.Column("group_key", sa.String(2048), primary_key=True),
        sa.Column("receiver", sa.String(128), nullable=False),
        sa.Column("group_labels_json", sa.Text, nullable=False),
        sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
        sa.Column("last_sent_ms", sa.BigInteger),
        sa.Column("notified_json", sa.Text, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("next_attempt_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notification_groups")
    op.drop_table("silences")
    op.drop_table("alerts")
