"""Wallet: wallets, ledger entries, payments by order.

Revision ID: wallet_0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mercato.platform.db import Cents, UTCDateTime

revision: str = "wallet_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "wallets",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("balance", Cents, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_wallets"),
        sa.CheckConstraint("balance >= 0", name="ck_wallets_balance_not_negative"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", Cents, nullable=False),
        sa.Column("balance_after", Cents, nullable=False),
        sa.Column("order_id", sa.String(36), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_entries"),
    )
    op.create_index("ix_ledger_entries_user_id_id", "ledger_entries", ["user_id", "id"])
    op.create_index(
        "ix_ledger_entries_order_id_kind", "ledger_entries", ["order_id", "kind"], unique=True
    )
    op.create_table(
        "order_payments",
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("amount", Cents, nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("order_id", name="pk_order_payments"),
    )


def downgrade() -> None:
    op.drop_table("order_payments")
    op.drop_table("ledger_entries")
    op.drop_table("wallets")
