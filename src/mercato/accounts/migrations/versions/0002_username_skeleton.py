"""Accounts: the TR39 confusable skeleton of each username, unique (no look-alike names).

Revision ID: accounts_0002
Revises: accounts_0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mercato.accounts.domain import username_skeleton

revision: str = "accounts_0002"
down_revision: str | None = "accounts_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("username_skeleton", sa.String(256), nullable=True))
    users = sa.table(
        "users",
        sa.column("id", sa.String),
        sa.column("username", sa.String),
        sa.column("created_at", sa.DateTime),
        sa.column("username_skeleton", sa.String),
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(users.c.id, users.c.username).order_by(users.c.created_at, users.c.id)
    ).all()
    # The oldest holder of a skeleton keeps it; a look-alike registered before this migration
    # keeps its name but no skeleton (NULL, which the unique index allows more than once).
    held: set[str] = set()
    for user_id, username in rows:
        skeleton = username_skeleton(username)
        if skeleton in held:
            continue
        held.add(skeleton)
        bind.execute(users.update().where(users.c.id == user_id).values(username_skeleton=skeleton))
    op.create_index("uq_users_username_skeleton", "users", ["username_skeleton"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_users_username_skeleton", table_name="users")
    op.drop_column("users", "username_skeleton")
