"""Identity: client token budgets in the platform's sliding-window counter (a fixed number of
rows per client instead of one per token request); the hour's requests move over.

Revision ID: identity_0004
Revises: identity_0003
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mercato.platform.request_window import create_window_tables, drop_window_tables

revision: str = "identity_0004"
down_revision: str | None = "identity_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The table this revision replaces, as identity_0001 made it.
_client_grants = sa.Table(
    "client_grants",
    sa.MetaData(),
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("client_id", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_client_grants_client_id", "client_id", "at"),
)


def upgrade() -> None:
    create_window_tables(op.get_bind(), "token_budget", old=_client_grants)


def downgrade() -> None:
    drop_window_tables(op.get_bind(), "token_budget", old=_client_grants)
