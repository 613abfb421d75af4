"""The metrics context's tables. Only this service reads or writes them.

`chunks` differs by backend (see migrations/versions/0001_metrics.py): on
PostgreSQL it is range-partitioned by day on start_ms with native arrays, so
retention drops whole partitions and aggregations unnest inside the database;
on SQLite the arrays are packed little-endian BLOBs.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, MetaData, SmallInteger, String, Table, Text

metadata = MetaData()

metric_names = Table(
    "metric_names",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("type", SmallInteger, nullable=False),
    Column("unit", String(64), nullable=False),
    Column("help", String(1024), nullable=False),
)

metric_families = Table(
    "metric_families",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("type", String(16), nullable=False),
    Column("unit", String(64), nullable=False),
    Column("help", String(1024), nullable=False),
)

series = Table(
    "series",
    metadata,
    Column("series_id", Integer, primary_key=True, autoincrement=True),
    Column("labels_hash", String(32), nullable=False, unique=True),
    Column("metric_name", String(128), nullable=False),
    Column("labels", Text, nullable=False),
    Column("agent_id", String(36), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("written_by", SmallInteger, nullable=False, server_default="0"),
)
