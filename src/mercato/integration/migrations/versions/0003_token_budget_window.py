"""Integration: upstream token budgets in the platform's sliding-window counter (a fixed number
of rows per upstream instead of one per token request); the hour's requests move over.

Revision ID: integration_0003
Revises: integration_0002
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mercato.platform.request_window import create_window_tables, drop_window_tables

revision: str = "integration_0003"
down_revision: str | None = "integration_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The table this revision replaces, as integration_0001 made it before this revision.
_token_requests = sa.Table(
    "token_requests",
    sa.MetaData(),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_token_requests_name_at", "name", "at"),
)


def upgrade() -> None:
    # integration_0001 creates the tables as `tables.py` declares them now: on a new database
    # the window's tables exist already and `token_requests` never did; both cases are checked.
    create_window_tables(op.get_bind(), "token_budget", old=_token_requests)


def downgrade() -> None:
    drop_window_tables(op.get_bind(), "token_budget", old=_token_requests)
