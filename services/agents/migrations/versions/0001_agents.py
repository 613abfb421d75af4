"""Create the agents and agent_labels tables.

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
        "agents",
        sa.Column("agent_id", sa.String(36), primary_key=True),
        sa.Column("hostname", sa.String(253), nullable=False, unique=True),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("os", sa.String(64), nullable=False),
        sa.Column("arch", sa.String(32), nullable=False),
        sa.Column("cpu_count", sa.Integer, nullable=False),
        sa.Column("memory_total_bytes", sa.BigInteger, nullable=False),
        sa.Column("kernel_version", sa.String(128), nullable=False),
        sa.Column("boot_time_ms", sa.BigInteger, nullable=False),
        sa.Column("token_hash", sa.String(64), unique=True),
        sa.Column("registered_at_ms", sa.BigInteger, nullable=False),
        sa.Column("last_heartbeat_at_ms", sa.BigInteger, nullable=False),
        sa.Column("deregistered_at_ms", sa.BigInteger),
    )
    op.create_table(
        "agent_labels",
        sa.Column(
            "agent_id",
            sa.String(36),
            sa.ForeignKey("agents.agent_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_index("ix_agent_labels_name_value", "agent_labels", ["name", "value"])


def downgrade() -> None:
    op.drop_table("agent_labels")
    op.drop_table("agents")
