"""Integration tables: job state and runs, export files, external orders and products,
kept credentials, token cache and budget.

Revision ID: integration_0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

from mercato.integration.tables import metadata

revision: str = "integration_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The first revision creates the tables exactly as declared; later changes get revisions.
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
