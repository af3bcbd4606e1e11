"""Identity's tables (the Alembic history in migrations/ creates exactly these)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Integer, String, Table, Text

from mercato.platform.db import UTCDateTime, naming_metadata
from mercato.platform.request_window import window_tables

metadata = naming_metadata()

# The replica of accounts' users, kept from user.* events. Keys are NULL for a deleted user or
# one whose name another user took since (see domain.release_keys).
credentials = Table(
    "credentials",
    metadata,
    Column("user_id", String(36), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("username_key", String(64), nullable=True, unique=True),
    Column("email", String(320), nullable=False),
    Column("email_key", String(320), nullable=True, unique=True),
    Column("password_hash", Text, nullable=True),
    Column("roles", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
)

clients = Table(
    "clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("grant_types", String(200), nullable=False),
    Column("token_budget_per_hour", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

# The token budgets of clients that have one, when no Redis is configured (identity_0004).
budget_heads, budget_stamps = window_tables(metadata, "token_budget")

# A login (or password grant) starts a family; each refresh replaces its token by a new one.
refresh_families = Table(
    "refresh_families",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), nullable=False, index=True),
    Column("client_id", String(64), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("remember_me", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revoked_reason", String(40), nullable=True),
)

# Opaque refresh tokens, by SHA-256; spending one sets `spent_at` (at most once).
refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("family_id", String(36), nullable=False, index=True),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("spent_at", UTCDateTime, nullable=True),
)

# People's access tokens still alive, so a logout or a password change can revoke them all.
access_tokens = Table(
    "access_tokens",
    metadata,
    Column("jti", String(36), primary_key=True),
    Column("family_id", String(36), nullable=False, index=True),
    Column("user_id", String(36), nullable=False, index=True),
    Column("expires_at", Integer, nullable=False),
)

# Revoked access tokens until they expire: reloaded into the shared store on start, so a
# logout survives a restart of an embedded process.
revoked_tokens = Table(
    "revoked_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("expires_at", Integer, nullable=False, index=True),
    Column("revoked_at", UTCDateTime, nullable=False),
)

# Deleted clients whose tokens are refused: those issued at or before `issued_until` (epoch
# seconds), until `expires_at`, when the last of them has expired. Reloaded like revoked_tokens.
revoked_clients = Table(
    "revoked_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("issued_until", Integer, nullable=False),
    Column("expires_at", Integer, nullable=False, index=True),
)

# People whose earlier tokens are refused (roles, status or password changed; deleted): tokens
# with `iat * 1000 < cut_off` (cut-off in epoch milliseconds), until `expires_at` (epoch
# seconds), when the last of them has expired. Reloaded into the shared store like the above.
revoked_subjects = Table(
    "revoked_subjects",
    metadata,
    Column("subject", String(64), primary_key=True),
    Column("cut_off", BigInteger, nullable=False),
    Column("expires_at", Integer, nullable=False, index=True),
)

# Signing keys: the newest unretired one signs; retired ones stay published while tokens they
# signed may live. The private key is wiped once the key is no longer published.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(10), nullable=False),
    Column("private_pem", Text, nullable=True),
    Column("encrypted", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("retired_at", UTCDateTime, nullable=True),
)

# Failed-login counters by SHA-256 of the key ("account:…" or "ip:…"): a login name may be a
# mistyped password, so it is never stored as given.
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", Float, nullable=False),
    Column("last_failure_at", Float, nullable=False),
)

# One row per thing provisioned on first start (signing key, exporter client).
bootstrap = Table(
    "bootstrap",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(200), nullable=False),
)
