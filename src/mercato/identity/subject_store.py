"""People's token cut-offs, kept in identity's database so the shared store can be refilled."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.identity.tables import revoked_subjects
from mercato.platform.db import insert_ignore


class SubjectCutOffRepository:
    """Per-person cut-offs (epoch milliseconds) until the tokens they refuse have expired."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def raise_to(self, subject: str, cut_off: int, expires_at: int) -> None:
        """Record a cut-off; a larger one already stored is kept (an older event applied late
        must not reopen the tokens a newer change closed)."""
        values = {"subject": subject, "cut_off": cut_off, "expires_at": expires_at}
        if await insert_ignore(self.conn, revoked_subjects, values, ["subject"]):
            return
        # One conditional update: of two concurrent writers the larger cut-off stays.
        await self.conn.execute(
            update(revoked_subjects)
            .where(revoked_subjects.c.subject == subject, revoked_subjects.c.cut_off < cut_off)
            .values(cut_off=cut_off, expires_at=expires_at)
        )

    async def live(self, now: int) -> list[tuple[str, int, int]]:
        """(subject, cut_off, expires_at) of cut-offs still in force at `now` (epoch seconds)."""
        rows = await self.conn.execute(
            select(
                revoked_subjects.c.subject,
                revoked_subjects.c.cut_off,
                revoked_subjects.c.expires_at,
            ).where(revoked_subjects.c.expires_at > now)
        )
        return [(subject, int(cut_off), int(exp)) for subject, cut_off, exp in rows]

    async def prune(self, before: int) -> None:
        """Forget cut-offs whose tokens all expired before `before` (epoch seconds)."""
        await self.conn.execute(
            delete(revoked_subjects).where(revoked_subjects.c.expires_at < before)
        )
