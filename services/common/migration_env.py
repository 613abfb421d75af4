"""Shared body of every service's alembic env.py: migrate on the connection we pass in."""

from __future__ import annotations

from typing import Any


def run_migrations(context: Any) -> None:
    """Run pending migrations on the connection `services.common.db.migrate` supplied."""
    config = context.config
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        version_table=config.attributes["version_table"],
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
