"""Accounts: counters of wrong `current_password` answers, per account.

Revision ID: accounts_0003
Revises: accounts_0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "accounts_0003"
down_revision: str | None = "accounts_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "password_throttle",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("locked_until", sa.Float, nullable=False),
        sa.Column("last_failure_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_password_throttle"),
    )


def downgrade() -> None:
    op.drop_table("password_throttle")
