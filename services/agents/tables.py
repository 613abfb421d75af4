"""The agents context's tables. Only this service reads or writes them."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, Integer, MetaData, String, Table, false

metadata = MetaData()

agents = Table(
    "agents",
    metadata,
    Column("agent_id", String(36), primary_key=True),
    Column("hostname", String(253), nullable=False, unique=True),
    Column("agent_version", String(64), nullable=False),
    Column("os", String(64), nullable=False),
    Column("arch", String(32), nullable=False),
    Column("cpu_count", Integer, nullable=False),
    Column("memory_total_bytes", BigInteger, nullable=False),
    Column("kernel_version", String(128), nullable=False),
    Column("boot_time_ms", BigInteger, nullable=False),
    Column("token_hash", String(64), unique=True),
    Column("registered_at_ms", BigInteger, nullable=False),
    Column("last_heartbeat_at_ms", BigInteger, nullable=False),
    Column("deregistered_at_ms", BigInteger),
    # An operator let the next registration of this hostname in without the host's token.
    Column("registration_approved", Boolean, nullable=False, server_default=false()),
    # Registrations refused because this hostname is taken (another machine, or a deregistered host).
    Column("refused_registrations", Integer, nullable=False, server_default="0"),
    Column("last_refused_registration_at_ms", BigInteger),
)

agent_labels = Table(
    "agent_labels",
    metadata,
    Column("agent_id", String(36), ForeignKey("agents.agent_id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(63), primary_key=True),
    Column("value", String(256), nullable=False),
    Index("ix_agent_labels_name_value", "name", "value"),
)

remote_write_credentials = Table(
    "remote_write_credentials",
    metadata,
    Column("credential_id", String(36), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("revoked_at_ms", BigInteger),
)
