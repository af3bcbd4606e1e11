"""Where revoked token ids (`jti`) live until the tokens would have expired anyway.

Embedded mode uses the process's own `MemoryRevocationStore`; distributed mode shares one
`RedisRevocationStore` so a logout on one replica is refused on all of them.

A whole client can be revoked too (it was deleted): every token it was issued up to then is
refused. Identity does not record the id of each client-credentials token it signs (that would
cost a write per token), so this is how a deleted client's tokens stop working at once.
"""

from __future__ import annotations

import math
import time
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis

# Entries outlive the token by a margin: a verifier accepts a token up to its `leeway` past
# `exp`, and clocks across hosts drift a little; forgetting the jti at exactly `exp` would
# reopen that window for a revoked token.
RETENTION_GRACE_SECONDS = 60


@runtime_checkable
class RevocationStore(Protocol):
    """Remembers revoked token ids until `expires_at` (epoch seconds, the token's `exp`)."""

    async def revoke(self, jti: str, expires_at: int) -> None:
        """Mark `jti` revoked; it may be forgotten once the token has expired."""
        ...

    async def is_revoked(self, jti: str) -> bool:
        """Whether `jti` was revoked (and its token has not long expired)."""
        ...

    async def revoke_client(self, client_id: str, issued_until: int, expires_at: int) -> None:
        """Refuse every token of `client_id` issued at or before `issued_until` (epoch seconds);
        the entry may be forgotten after `expires_at`, when all such tokens have expired."""
        ...

    async def refuses(self, jti: str, client_id: str | None, issued_at: int) -> bool:
        """Whether a token (its `jti`, `client_id` and `iat`) was revoked, alone or with its
        client: the verifier's one question per request."""
        ...


class MemoryRevocationStore:
    """An in-process store: a dict of jti -> forget-after time, purged as it grows."""

    def __init__(self, *, purge_every: int = 1024) -> None:
        self._entries: dict[str, float] = {}
        self._clients: dict[str, tuple[int, float]] = {}  # client -> (issued until, forget after)
        self._purge_every = purge_every
        self._since_purge = 0

    async def revoke(self, jti: str, expires_at: int) -> None:
        """Mark `jti` revoked until its token's expiry (plus a grace margin)."""
        self._entries[jti] = max(self._entries.get(jti, 0.0), expires_at + RETENTION_GRACE_SECONDS)
        self._since_purge += 1
        # Amortised cleanup: a full scan once per `purge_every` revocations keeps the dict to
        # roughly the tokens still alive, without a background task.
        if self._since_purge >= self._purge_every:
            self.purge()

    async def is_revoked(self, jti: str) -> bool:
        """Whether `jti` is revoked: one dict lookup on the hot path."""
        # An entry past its time describes a token that no verifier accepts any more, so
        # answering True for it is harmless and saves reading the clock on every request.
        return jti in self._entries

    async def revoke_client(self, client_id: str, issued_until: int, expires_at: int) -> None:
        """Refuse the client's tokens issued until `issued_until`, until they have expired."""
        before, until = self._clients.get(client_id, (0, 0.0))
        self._clients[client_id] = (
            max(before, issued_until),
            max(until, expires_at + RETENTION_GRACE_SECONDS),
        )

    async def refuses(self, jti: str, client_id: str | None, issued_at: int) -> bool:
        """The jti lookup, then the client's cut-off when the client was ever revoked."""
        if jti in self._entries:
            return True
        revoked = self._clients.get(client_id) if client_id is not None else None
        return revoked is not None and issued_at <= revoked[0]

    def purge(self, now: float | None = None) -> int:
        """Forget entries whose tokens have expired; answers how many were dropped."""
        current = time.time() if now is None else now
        expired = [jti for jti, until in self._entries.items() if until <= current]
        for jti in expired:
            del self._entries[jti]
        for client_id in [c for c, (_, until) in self._clients.items() if until <= current]:
            del self._clients[client_id]
        self._since_purge = 0
        return len(expired)

    def __len__(self) -> int:
        return len(self._entries)


class RedisRevocationStore:
    """A store shared by every process: one Redis key per jti, expiring with the token.

    Keys are `{prefix}:{jti}`; the prefix names the namespace (for example `mercato:revoked`).
    """

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix.rstrip(":")

    def _key(self, jti: str) -> str:
        return f"{self._prefix}:{jti}"

    def _client_key(self, client_id: str) -> str:
        # A jti is a UUID, so this name never collides with one.
        return f"{self._prefix}:client:{client_id}"

    async def revoke(self, jti: str, expires_at: int) -> None:
        """Set the jti's key with an absolute expiry (EXAT) at the token's expiry plus grace."""
        # EXAT in the past would make Redis drop the key at once; keep it at least a moment so a
        # concurrent check still sees it (the token is dead anyway by then).
        until = max(expires_at + RETENTION_GRACE_SECONDS, math.ceil(time.time()) + 1)
        await self._redis.set(self._key(jti), b"1", exat=until)

    async def is_revoked(self, jti: str) -> bool:
        """EXISTS on the jti's key."""
        return bool(await self._redis.exists(self._key(jti)))

    async def revoke_client(self, client_id: str, issued_until: int, expires_at: int) -> None:
        """Store the client's cut-off (`iat` at or before it is refused) until its tokens expire."""
        until = max(expires_at + RETENTION_GRACE_SECONDS, math.ceil(time.time()) + 1)
        await self._redis.set(self._client_key(client_id), str(issued_until).encode(), exat=until)

    async def refuses(self, jti: str, client_id: str | None, issued_at: int) -> bool:
        """One MGET for the jti's key and the client's cut-off."""
        if client_id is None:
            return await self.is_revoked(jti)
        by_jti, cutoff = await self._redis.mget(self._key(jti), self._client_key(client_id))
        return by_jti is not None or (cutoff is not None and issued_at <= int(cutoff))
