"""The outbox keeps each event's correlation id in a column: the event log filters by it.

Revision ID: events_0003
Revises: events_0002
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "events_0003"
down_revision: str | None = "events_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # events_0001 creates the tables as `tables.py` declares them today, the column included:
    # only a database made before this revision lacks it.
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("event_outbox")}
    if "correlation_id" in columns:
        return
    op.add_column("event_outbox", sa.Column("correlation_id", sa.String(128), nullable=True))
    op.create_index("ix_event_outbox_correlation_id", "event_outbox", ["correlation_id"])


def downgrade() -> None:
    op.drop_index("ix_event_outbox_correlation_id", "event_outbox")
    op.drop_column("event_outbox", "correlation_id")
