"""Alembic schema history of this service (a package so that installs ship it)."""
