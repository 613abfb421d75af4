"""The alerts context's tables. Only this service reads or writes them."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text

metadata = MetaData()

alerts = Table(
    "alerts",
    metadata,
    Column("fingerprint", String(16), primary_key=True),
    Column("rule", Text, nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("labels_json", Text, nullable=False),
    Column("annotations_json", Text, nullable=False),
    # repr() of the float, so NaN and infinities survive SQLite too.
    Column("value", String(32), nullable=False),
    Column("active_since_ms", BigInteger, nullable=False),
    Column("fired_at_ms", BigInteger),
    Column("resolved_at_ms", BigInteger),
    Column("keep_firing_since_ms", BigInteger),
)

silences = Table(
    "silences",
    metadata,
    Column("silence_id", String(36), primary_key=True),
    Column("matchers_json", Text, nullable=False),
    Column("starts_at_ms", BigInteger, nullable=False),
    Column("ends_at_ms", BigInteger, nullable=False, index=True),
    Column("author", String(256), nullable=False),
    Column("comment", String(1024), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
)

notification_groups = Table(
    "notification_groups",
    metadata,
    Column("group_key", String(2048), primary_key=True),
    Column("receiver", String(128), nullable=False),
    Column("group_labels_json", Text, nullable=False),
    Column("first_seen_ms", BigInteger, nullable=False),
    Column("last_sent_ms", BigInteger),
    Column("notified_json", Text, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("next_attempt_ms", BigInteger, nullable=False),
)
