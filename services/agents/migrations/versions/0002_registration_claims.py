"""Registration claims: an operator's approval of the next registration of a hostname, and the
registrations refused because another machine claimed a registered hostname.

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
    with op.batch_alter_table("agents") as table:
        table.add_column(sa.Column("registration_approved", sa.Boolean, nullable=False, server_default=sa.false()))
        table.add_column(sa.Column("refused_registrations", sa.Integer, nullable=False, server_default="0"))
        table.add_column(sa.Column("last_refused_registration_at_ms", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("agents") as table:
        table.drop_column("last_refused_registration_at_ms")
        table.drop_column("refused_registrations")
        table.drop_column("registration_approved")
