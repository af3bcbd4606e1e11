"""Identity: deleted clients whose tokens are refused until they expire.

Revision ID: identity_0002
Revises: identity_0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "identity_0002"
down_revision: str | None = "identity_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revoked_clients",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("issued_until", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("client_id", name="pk_revoked_clients"),
    )
    op.create_index("ix_revoked_clients_expires_at", "revoked_clients", ["expires_at"])


def downgrade() -> None:
    op.drop_table("revoked_clients")
