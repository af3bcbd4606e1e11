"""The platform's event tables, present in every service's database."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, String, Table, Text, UniqueConstraint

from mercato.platform.db import AutoIncrementId, UTCDateTime, naming_metadata

metadata = naming_metadata()

outbox = Table(
    "event_outbox",
    metadata,
    Column("seq", AutoIncrementId, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("event_type", String(100), nullable=False),
    Column("subject", String(100), nullable=False),
    Column("envelope", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    # A column of its own so the event log filters by it without parsing every envelope.
    Column("correlation_id", String(128), nullable=True),
)
Index("ix_event_outbox_correlation_id", outbox.c.correlation_id)
Index(
    "ix_event_outbox_unsent",
    outbox.c.seq,
    sqlite_where=outbox.c.sent_at.is_(None),
    postgresql_where=outbox.c.sent_at.is_(None),
)

# The in-process transport's durable queue: events waiting for this database's consumer.
incoming = Table(
    "event_incoming",
    metadata,
    Column("seq", AutoIncrementId, primary_key=True, autoincrement=True),
    Column("consumer", String(64), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("envelope", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("available_at", Float, nullable=False),
    UniqueConstraint("consumer", "event_id"),
)
Index("ix_event_incoming_due", incoming.c.consumer, incoming.c.available_at)

inbox = Table(
    "event_inbox",
    metadata,
    Column("consumer", String(64), primary_key=True),
    Column("event_id", String(36), primary_key=True),
    Column("processed_at", UTCDateTime, nullable=False),
)

dead_letters = Table(
    "event_dead_letters",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("consumer", String(64), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("envelope", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("failed_at", UTCDateTime, nullable=False),
    Column("replayed_at", UTCDateTime, nullable=True),
)
Index("ix_event_dead_letters_open", dead_letters.c.consumer, dead_letters.c.replayed_at)
