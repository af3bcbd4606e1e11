"""Identity: people whose tokens issued before a cut-off are refused until they expire.

Revision ID: identity_0003
Revises: identity_0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "identity_0003"
down_revision: str | None = "identity_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revoked_subjects",
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("cut_off", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("subject", name="pk_revoked_subjects"),
    )
    op.create_index("ix_revoked_subjects_expires_at", "revoked_subjects", ["expires_at"])


def downgrade() -> None:
    op.drop_table("revoked_subjects")
