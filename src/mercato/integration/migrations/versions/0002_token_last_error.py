"""Integration: the token managers' last failure, shared by every replica.

Revision ID: integration_0002
Revises: integration_0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "integration_0002"
down_revision: str | None = "integration_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # integration_0001 creates the tables as `tables.py` declares them now, so on a new
    # database the column is there already; only databases made before it need it added.
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("token_cache")}
    if "last_error" not in columns:
        op.add_column("token_cache", sa.Column("last_error", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("token_cache", "last_error")
