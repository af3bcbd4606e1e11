"""Repositories over refresh families and tokens, people's access tokens, revocations and keys."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.identity.domain import RefreshFamily, RefreshRecord
from mercato.identity.tables import (
    access_tokens,
    refresh_families,
    refresh_tokens,
    revoked_clients,
    revoked_tokens,
    signing_keys,
)
from mercato.platform.db import insert_ignore


class SessionRepository:
    """Refresh families, their tokens, and the people's access tokens issued in them."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add_family(self, family: RefreshFamily, now: datetime) -> None:
        """Start a family (a login)."""
        await self.conn.execute(
            refresh_families.insert().values(
                id=family.id,
                user_id=family.user_id,
                client_id=family.client_id,
                scopes=json.dumps(list(family.scopes)),
                remember_me=family.remember_me,
                created_at=now,
            )
        )

    async def add_refresh(
        self, token_hash: str, family_id: str, issued_at: datetime, expires_at: datetime
    ) -> None:
        """Store a refresh token by its digest."""
        await self.conn.execute(
            refresh_tokens.insert().values(
                token_hash=token_hash,
                family_id=family_id,
                issued_at=issued_at,
                expires_at=expires_at,
            )
        )

    async def find_refresh(self, token_hash: str) -> RefreshRecord | None:
        """The refresh token with this digest and its family, or None."""
        query = (
            select(refresh_tokens, refresh_families)
            .join(refresh_families, refresh_families.c.id == refresh_tokens.c.family_id)
            .where(refresh_tokens.c.token_hash == token_hash)
        )
        row = (await self.conn.execute(query)).mappings().first()
        if row is None:
            return None
        return RefreshRecord(
            family=_family(row),
            issued_at=row["issued_at"],
            expires_at=row["expires_at"],
            spent=row["spent_at"] is not None,
        )

    async def spend(self, token_hash: str, now: datetime) -> bool:
        """Mark a refresh token spent; True only for the one caller that spent it.

        One conditional UPDATE is the whole race: of two concurrent refreshes with one token,
        the database lets exactly one change the row.
        """
        result = await self.conn.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.token_hash == token_hash, refresh_tokens.c.spent_at.is_(None))
            .values(spent_at=now)
        )
        return result.rowcount == 1

    async def revoke_families(
        self, family_ids: Sequence[str], reason: str, now: datetime
    ) -> list[str]:
        """Revoke the given families that still stand; answers those revoked now."""
        if not family_ids:
            return []
        standing = await self.conn.execute(
            select(refresh_families.c.id).where(
                refresh_families.c.id.in_(family_ids), refresh_families.c.revoked_at.is_(None)
            )
        )
        ids = [family_id for (family_id,) in standing]
        if ids:
            await self.conn.execute(
                update(refresh_families)
                .where(refresh_families.c.id.in_(ids))
                .values(revoked_at=now, revoked_reason=reason)
            )
        return ids

    async def families_of_user(self, user_id: str) -> list[str]:
        """Ids of a user's families that still stand."""
        rows = await self.conn.execute(
            select(refresh_families.c.id).where(
                refresh_families.c.user_id == user_id, refresh_families.c.revoked_at.is_(None)
            )
        )
        return [family_id for (family_id,) in rows]

    async def families_of_client(self, client_id: str) -> list[str]:
        """Ids of a client's families that still stand."""
        rows = await self.conn.execute(
            select(refresh_families.c.id).where(
                refresh_families.c.client_id == client_id, refresh_families.c.revoked_at.is_(None)
            )
        )
        return [family_id for (family_id,) in rows]

    async def add_access(self, jti: str, family_id: str, user_id: str, expires_at: int) -> None:
        """Remember a person's access token until it expires."""
        await self.conn.execute(
            access_tokens.insert().values(
                jti=jti, family_id=family_id, user_id=user_id, expires_at=expires_at
            )
        )

    async def family_of_access(self, jti: str) -> str | None:
        """The family an access token was issued in."""
        row = await self.conn.execute(
            select(access_tokens.c.family_id).where(access_tokens.c.jti == jti)
        )
        return row.scalar_one_or_none()

    async def live_access(self, family_ids: Sequence[str], now: int) -> list[tuple[str, int]]:
        """(jti, exp) of the unexpired access tokens issued in the given families."""
        if not family_ids:
            return []
        rows = await self.conn.execute(
            select(access_tokens.c.jti, access_tokens.c.expires_at).where(
                access_tokens.c.family_id.in_(family_ids), access_tokens.c.expires_at > now
            )
        )
        return [(jti, int(exp)) for jti, exp in rows]

    async def prune(self, now: datetime, epoch: int) -> None:
        """Drop expired refresh and access tokens."""
        await self.conn.execute(delete(refresh_tokens).where(refresh_tokens.c.expires_at < now))
        await self.conn.execute(delete(access_tokens).where(access_tokens.c.expires_at < epoch))


def _family(row: RowMapping) -> RefreshFamily:
    return RefreshFamily(
        id=row["family_id"],
        user_id=row["user_id"],
        client_id=row["client_id"],
        scopes=tuple(json.loads(row["scopes"])),
        remember_me=bool(row["remember_me"]),
        revoked=row["revoked_at"] is not None,
    )


class RevocationRepository:
    """Revoked access tokens until they expire."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, jti: str, expires_at: int, now: datetime) -> None:
        """Record a revocation (a repeat is ignored)."""
        await insert_ignore(
            self.conn,
            revoked_tokens,
            {"jti": jti, "expires_at": expires_at, "revoked_at": now},
            ["jti"],
        )

    async def live(self, now: int) -> list[tuple[str, int]]:
        """(jti, exp) of revocations whose tokens have not expired."""
        rows = await self.conn.execute(
            select(revoked_tokens.c.jti, revoked_tokens.c.expires_at).where(
                revoked_tokens.c.expires_at > now
            )
        )
        return [(jti, int(exp)) for jti, exp in rows]

    async def prune(self, before: int) -> None:
        """Forget revocations of tokens expired before `before`."""
        await self.conn.execute(delete(revoked_tokens).where(revoked_tokens.c.expires_at < before))
        await self.conn.execute(
            delete(revoked_clients).where(revoked_clients.c.expires_at < before)
        )

    async def add_client(self, client_id: str, issued_until: int, expires_at: int) -> None:
        """Record a revoked client (a later revocation of the same id replaces it)."""
        await self.conn.execute(
            delete(revoked_clients).where(revoked_clients.c.client_id == client_id)
        )
        await self.conn.execute(
            revoked_clients.insert().values(
                client_id=client_id, issued_until=issued_until, expires_at=expires_at
            )
        )

    async def live_clients(self, now: int) -> list[tuple[str, int, int]]:
        """(client_id, issued_until, expires_at) of client revocations still in force."""
        rows = await self.conn.execute(
            select(
                revoked_clients.c.client_id,
                revoked_clients.c.issued_until,
                revoked_clients.c.expires_at,
            ).where(revoked_clients.c.expires_at > now)
        )
        return [(client_id, int(until), int(exp)) for client_id, until, exp in rows]


@dataclass(frozen=True)
class StoredKey:
    """A signing key row; `private_pem` may be encrypted, and is None once wiped."""

    kid: str
    alg: str
    private_pem: str | None
    encrypted: bool
    created_at: datetime
    retired_at: datetime | None

    def __repr__(self) -> str:
        # Never the PEM, even encrypted.
        return f"StoredKey(kid={self.kid!r}, alg={self.alg!r}, retired_at={self.retired_at!r})"


class KeyRepository:
    """Signing keys."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def all(self) -> list[StoredKey]:
        """Every key, newest first."""
        rows = await self.conn.execute(
            select(signing_keys).order_by(signing_keys.c.created_at.desc(), signing_keys.c.kid)
        )
        return [
            StoredKey(
                kid=row["kid"],
                alg=row["alg"],
                private_pem=row["private_pem"],
                encrypted=bool(row["encrypted"]),
                created_at=row["created_at"],
                retired_at=row["retired_at"],
            )
            for row in rows.mappings()
        ]

    async def add(self, key: StoredKey) -> None:
        """Store a new key."""
        await self.conn.execute(
            signing_keys.insert().values(
                kid=key.kid,
                alg=key.alg,
                private_pem=key.private_pem,
                encrypted=key.encrypted,
                created_at=key.created_at,
                retired_at=key.retired_at,
            )
        )

    async def retire_all_but(self, kid: str, now: datetime) -> None:
        """Retire every unretired key except `kid` (the new current one)."""
        await self.conn.execute(
            update(signing_keys)
            .where(signing_keys.c.kid != kid, signing_keys.c.retired_at.is_(None))
            .values(retired_at=now)
        )

    async def wipe_retired_before(self, cutoff: datetime) -> None:
        """Erase the private half of keys retired before `cutoff` (no longer published)."""
        await self.conn.execute(
            update(signing_keys)
            .where(signing_keys.c.retired_at < cutoff, signing_keys.c.private_pem.is_not(None))
            .values(private_pem=None)
        )
