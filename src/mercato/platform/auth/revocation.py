"""Where revoked token ids (`jti`) live until the tokens would have expired anyway.

Embedded mode uses the process's own `MemoryRevocationStore`; distributed mode shares one
`RedisRevocationStore` so a logout on one replica is refused on all of them.

A whole client can be revoked too (it was deleted): every token it was issued up to then is
refused. Identity does not record the id of each client-credentials token it signs (that would
cost a write per token), so this is how a deleted client's tokens stop working at once.

A person can be cut off the same way (`revoke_subject`): when their roles, status or password
change, or they are deleted, every token issued to them before the change is refused, whichever
client it went to. The cut-off is kept in milliseconds while `iat` is whole seconds, so the rule
is "refused when `iat * 1000 < cut_off`" (`refuses_issued_at`): every token issued before the
change has `iat <= floor(cut_off / 1000)` and is refused unless the cut-off falls exactly on a
second; a token issued in the cut-off's own second cannot be told apart from an earlier one and
is refused too, so identity waits for the next second before it signs a new token for that
person (at most a second, once per change), and the person's next login works.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # imported only where Redis is configured
    import redis.asyncio as aioredis

# Entries outlive the token by a margin: a verifier accepts a token up to its `leeway` past
# `exp`, and clocks across hosts drift a little; forgetting the jti at exactly `exp` would
# reopen that window for a revoked token.
RETENTION_GRACE_SECONDS = 60
# The longest a person's access token may live (identity's settings cap it at a day): a service
# that cuts a person off without knowing identity's configured lifetime keeps the entry this
# long, so it outlives every token it refuses.
LONGEST_PERSON_TOKEN_SECONDS = 24 * 3600

# Keeps the larger of two cut-offs, atomically: accounts writes one when it answers, identity
# another when it applies the event, and an older event applied late must not lower a newer
# cut-off. The expiry only ever moves later (EXPIREAT ... GT).
_RAISE_CUT_OFF = """
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) >= tonumber(ARGV[1]) then
  redis.call('EXPIREAT', KEYS[1], ARGV[2], 'GT')
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
return 1
"""


def cut_off_ms(at: datetime) -> int:
    """The cut-off of a change made at `at`, in epoch milliseconds (rounded down, so that
    accounts and identity, given the same instant, write the same value)."""
    return math.floor(at.timestamp() * 1000)


def refuses_issued_at(issued_at: int, cut_off: int) -> bool:
    """Whether a token issued at `issued_at` (epoch seconds) falls before a subject's cut-off
    (epoch milliseconds); see the module's docstring for the same-second case."""
    return issued_at * 1000 < cut_off


async def cut_off_subject(
    store: RevocationStore,
    subject: str,
    at: datetime,
    lifetime_seconds: int = LONGEST_PERSON_TOKEN_SECONDS,
) -> int:
    """Refuse every token of `subject` issued before `at`, until tokens `lifetime_seconds` long
    issued then have expired; answers the cut-off written (epoch milliseconds)."""
    cut_off = cut_off_ms(at)
    await store.revoke_subject(subject, cut_off, math.ceil(cut_off / 1000) + lifetime_seconds)
    return cut_off


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

    async def revoke_subject(self, subject: str, cut_off: int, expires_at: int) -> None:
        """Refuse every token of `subject` (a person's `sub`) issued before `cut_off` (epoch
        milliseconds, see `refuses_issued_at`); a larger cut-off already stored is kept. The
        entry may be forgotten after `expires_at` (epoch seconds)."""
        ...

    async def subject_cut_off(self, subject: str) -> int | None:
        """The cut-off stored for `subject` (epoch milliseconds), if any."""
        ...

    async def refuses(
        self, jti: str, client_id: str | None, issued_at: int, subject: str | None = None
    ) -> bool:
        """Whether a token (its `jti`, `client_id`, `iat` and, for a person, `sub`) was revoked,
        alone, with its client or with its subject: the verifier's one question per request."""
        ...


class MemoryRevocationStore:
    """An in-process store: a dict of jti -> forget-after time, purged as it grows."""

    def __init__(self, *, purge_every: int = 1024) -> None:
        self._entries: dict[str, float] = {}
        self._clients: dict[str, tuple[int, float]] = {}  # client -> (issued until, forget after)
        self._subjects: dict[str, tuple[int, float]] = {}  # subject -> (cut-off ms, forget after)
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

    async def revoke_subject(self, subject: str, cut_off: int, expires_at: int) -> None:
        """Keep the larger cut-off of the subject, until its tokens have expired."""
        before, until = self._subjects.get(subject, (0, 0.0))
        self._subjects[subject] = (
            max(before, cut_off),
            max(until, expires_at + RETENTION_GRACE_SECONDS),
        )

    async def subject_cut_off(self, subject: str) -> int | None:
        """The subject's cut-off, if it has one."""
        entry = self._subjects.get(subject)
        return None if entry is None else entry[0]

    async def refuses(
        self, jti: str, client_id: str | None, issued_at: int, subject: str | None = None
    ) -> bool:
        """The jti lookup, then the client's and the subject's cut-offs when they have one."""
        if jti in self._entries:
            return True
        revoked = self._clients.get(client_id) if client_id is not None else None
        if revoked is not None and issued_at <= revoked[0]:
            return True
        person = self._subjects.get(subject) if subject is not None else None
        return person is not None and refuses_issued_at(issued_at, person[0])

    def purge(self, now: float | None = None) -> int:
        """Forget entries whose tokens have expired; answers how many were dropped."""
        current = time.time() if now is None else now
        expired = [jti for jti, until in self._entries.items() if until <= current]
        for jti in expired:
            del self._entries[jti]
        for client_id in [c for c, (_, until) in self._clients.items() if until <= current]:
            del self._clients[client_id]
        for subject in [s for s, (_, until) in self._subjects.items() if until <= current]:
            del self._subjects[subject]
        self._since_purge = 0
        return len(expired)

    def __len__(self) -> int:
        return len(self._entries)


class RedisRevocationStore:
    """A store shared by every process: one Redis key per jti, expiring with the token.

    Keys are `{prefix}:{jti}`, `{prefix}:client:{client_id}` and `{prefix}:subject:{sub}`; the
    prefix names the namespace (for example `mercato:revoked`).
    """

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix.rstrip(":")
        self._raise_cut_off = redis.register_script(_RAISE_CUT_OFF)

    def _key(self, jti: str) -> str:
        return f"{self._prefix}:{jti}"

    def _client_key(self, client_id: str) -> str:
        # A jti is a UUID, so this name never collides with one.
        return f"{self._prefix}:client:{client_id}"

    def _subject_key(self, subject: str) -> str:
        return f"{self._prefix}:subject:{subject}"

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

    async def revoke_subject(self, subject: str, cut_off: int, expires_at: int) -> None:
        """Raise the subject's cut-off (never lower it) until its tokens have expired."""
        until = max(expires_at + RETENTION_GRACE_SECONDS, math.ceil(time.time()) + 1)
        await self._raise_cut_off(keys=[self._subject_key(subject)], args=[cut_off, until])

    async def subject_cut_off(self, subject: str) -> int | None:
        """GET on the subject's key."""
        value = await self._redis.get(self._subject_key(subject))
        return None if value is None else int(value)

    async def refuses(
        self, jti: str, client_id: str | None, issued_at: int, subject: str | None = None
    ) -> bool:
        """One MGET for the jti's key and the client's and subject's cut-offs."""
        keys = [self._key(jti)]
        if client_id is not None:
            keys.append(self._client_key(client_id))
        if subject is not None:
            keys.append(self._subject_key(subject))
        values = iter(await self._redis.mget(keys))
        if next(values) is not None:
            return True
        if client_id is not None:
            cutoff = next(values)
            if cutoff is not None and issued_at <= int(cutoff):
                return True
        if subject is not None:
            person = next(values)
            return person is not None and refuses_issued_at(issued_at, int(person))
        return False
