"""Catalog: products, stock reservations by order, marks of applied provider states.

Revision ID: catalog_0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mercato.platform.db import Cents, UTCDateTime

revision: str = "catalog_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("author", sa.String(200), nullable=True),
        sa.Column("category", sa.String(100), nullable=True),
        sa.Column("price", Cents, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("stock", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=True),
        sa.Column("external_id", sa.String(100), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_products"),
        sa.CheckConstraint("stock >= 0", name="ck_products_stock_not_negative"),
        sa.CheckConstraint("price >= 0", name="ck_products_price_not_negative"),
    )
    op.create_index("ix_products_created_at_id", "products", ["created_at", "id"])
    op.create_index(
        "ix_products_source_external_id", "products", ["source", "external_id"], unique=True
    )
    op.create_index("ix_products_category", "products", ["category"])
    op.create_table(
        "reservations",
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("items", sa.Text, nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("order_id", name="pk_reservations"),
    )
    op.create_table(
        "external_marks",
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(100), nullable=False),
        sa.Column("fetched_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("source", "external_id", name="pk_external_marks"),
    )


def downgrade() -> None:
    op.drop_table("external_marks")
    op.drop_table("reservations")
    op.drop_table("products")
