"""The integration service's tables (its own database; no other service reads them)."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from mercato.platform.db import Cents, UTCDateTime, naming_metadata
from mercato.platform.request_window import window_tables

metadata = naming_metadata()

# Where each job's schedule stands: the tick replicas race to claim next.
job_state = Table(
    "job_state",
    metadata,
    Column("job", String(64), primary_key=True),
    Column("next_run_at", UTCDateTime, nullable=False),
)

# Every run; a scheduled tick is claimed by inserting its (job, tick) row, which only one
# replica can do. Manual runs have no tick (NULLs never collide).
job_runs = Table(
    "job_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("job", String(64), nullable=False),
    Column("tick", UTCDateTime, nullable=True),
    Column("trigger", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("owner", String(64), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("counts", Text, nullable=True),
    Column("output", Text, nullable=True),
    Column("error", Text, nullable=True),
    UniqueConstraint("job", "tick"),
)
Index("ix_job_runs_job_requested", job_runs.c.job, job_runs.c.requested_at)
Index("ix_job_runs_status", job_runs.c.status)

# The files the export job wrote: the only ones the download endpoint serves.
export_files = Table(
    "export_files",
    metadata,
    Column("file_name", String(128), primary_key=True),
    Column("run_id", String(36), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

external_orders = Table(
    "external_orders",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("source", String(32), nullable=False),
    Column("external_id", String(100), nullable=False),
    Column("status", String(32), nullable=False),
    Column("total", Cents, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("customer_email", String(320), nullable=True),
    Column("items", Text, nullable=False),
    Column("placed_at", UTCDateTime, nullable=True),
    Column("fingerprint", String(64), nullable=False),
    Column("imported_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("source", "external_id"),
)

# What the product sync last handed to catalog, per provider product: how it tells created,
# updated and unchanged apart without reading catalog's tables.
external_products = Table(
    "external_products",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("external_id", String(100), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Client credentials this service keeps (the exporter's secret, handed over once by identity).
client_credentials = Table(
    "client_credentials",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("client_id", String(128), nullable=False),
    Column("client_secret", Text, nullable=False),
    Column("stored_at", UTCDateTime, nullable=False),
)

# The token managers' shared state when there is no Redis (see token_store.py).
token_cache = Table(
    "token_cache",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("access_token", Text, nullable=True),
    Column("issued_at", Float, nullable=True),
    Column("expires_at", Float, nullable=True),
    Column("lock_owner", String(64), nullable=True),
    Column("lock_until", Float, nullable=True),
    Column("last_error", Text, nullable=True),  # integration_0002
)
# The token managers' budgets when there is no Redis (integration_0003; see token_store.py).
budget_heads, budget_stamps = window_tables(metadata, "token_budget")
