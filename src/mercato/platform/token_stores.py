"""Where token managers keep what must outlive a process or be shared by replicas.

A `TokenStore` holds, per upstream `name`: the cached access token, the rolling-hour record of
token requests (the budget), and a short lock that lets one replica fetch while the others wait.
Every time-dependent method takes `now` (epoch seconds) from the caller, so a simulated clock
drives the whole thing; stores never read the clock themselves (Redis's own key expiry is only
garbage collection, never a decision).

To add a backend (a SQL table, say), implement the seven methods of `TokenStore` with these
guarantees: `try_acquire_budget` checks and records in one atomic step (one of the
`request_window` counters does), `clear_token(only_if=...)` is a compare-and-delete, and
`acquire_lock` succeeds for exactly one owner until it is released or `ttl` passes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mercato.platform.request_window import MemoryRequestWindow, RedisRequestWindow
from mercato.platform.secrets import SecretBox, SecretsKeyError

if TYPE_CHECKING:  # imported only where Redis is configured
    from redis.asyncio import Redis


@dataclass(frozen=True)
class StoredToken:
    """A cached access token; `repr` never shows the token itself."""

    access_token: str = field(repr=False)
    issued_at: float
    expires_at: float

    @property
    def lifetime(self) -> float:
        """Seconds between issue and expiry."""
        return self.expires_at - self.issued_at


class TokenStore(Protocol):
    """Shared state of the token managers of one or more upstreams (keyed by `name`)."""

    async def load_token(self, name: str) -> StoredToken | None:
        """The cached token, or None. Expiry is the caller's business."""
        ...

    async def save_token(self, name: str, token: StoredToken, *, now: float) -> None:
        """Cache `token`, replacing any other."""
        ...

    async def clear_token(self, name: str, *, only_if: str | None = None) -> None:
        """Forget the cached token; with `only_if`, only when it is still that token."""
        ...

    async def try_acquire_budget(
        self, name: str, *, now: float, limit: int, window: float
    ) -> tuple[bool, float]:
        """Atomically: if fewer than `limit` requests fall in (now - window, now], record one at
        `now` and answer (True, 0); else answer (False, seconds until the oldest leaves)."""
        ...

    async def requests_in_window(self, name: str, *, now: float, window: float) -> int:
        """How many requests fall in (now - window, now]."""
        ...

    async def acquire_lock(self, name: str, owner: str, *, ttl: float, now: float) -> bool:
        """Take the fetch lock for `ttl` seconds unless someone else holds it."""
        ...

    async def release_lock(self, name: str, owner: str) -> None:
        """Release the lock if `owner` still holds it."""
        ...

    async def record_error(self, name: str, error: str | None) -> None:
        """Remember why the last token request failed (None: it succeeded), for every replica's
        status answer."""
        ...

    async def last_error(self, name: str) -> str | None:
        """Why the last token request failed, or None."""
        ...


class MemoryTokenStore:
    """In-process store: one process (embedded mode, tests). Forgets everything on restart."""

    def __init__(self) -> None:
        self._tokens: dict[str, StoredToken] = {}
        self._requests = MemoryRequestWindow()
        self._locks: dict[str, tuple[str, float]] = {}
        self._errors: dict[str, str] = {}

    async def load_token(self, name: str) -> StoredToken | None:
        """See `TokenStore`."""
        return self._tokens.get(name)

    async def save_token(self, name: str, token: StoredToken, *, now: float) -> None:
        """See `TokenStore`."""
        self._tokens[name] = token

    async def clear_token(self, name: str, *, only_if: str | None = None) -> None:
        """See `TokenStore`."""
        current = self._tokens.get(name)
        if current is not None and (only_if is None or current.access_token == only_if):
            del self._tokens[name]

    async def try_acquire_budget(
        self, name: str, *, now: float, limit: int, window: float
    ) -> tuple[bool, float]:
        """See `TokenStore`. No await inside, hence atomic on the event loop."""
        return self._requests.take(name, now=now, limit=limit, window=window)

    async def requests_in_window(self, name: str, *, now: float, window: float) -> int:
        """See `TokenStore`."""
        return self._requests.count(name, now=now, window=window)

    async def acquire_lock(self, name: str, owner: str, *, ttl: float, now: float) -> bool:
        """See `TokenStore`."""
        held = self._locks.get(name)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self._locks[name] = (owner, now + ttl)
        return True

    async def release_lock(self, name: str, owner: str) -> None:
        """See `TokenStore`."""
        held = self._locks.get(name)
        if held is not None and held[0] == owner:
            del self._locks[name]

    async def record_error(self, name: str, error: str | None) -> None:
        """See `TokenStore`."""
        if error is None:
            self._errors.pop(name, None)
        else:
            self._errors[name] = error

    async def last_error(self, name: str) -> str | None:
        """See `TokenStore`."""
        return self._errors.get(name)


# A sealed token differs at every write, so the compare is on its digest; a token cached in
# clear by an older version is compared as it is.
_CLEAR_IF_LUA = """
if ARGV[1] == '' or redis.call('HGET', KEYS[1], 'fingerprint') == ARGV[1]
   or redis.call('HGET', KEYS[1], 'access_token') == ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_RESEAL_LUA = """
if redis.call('HGET', KEYS[1], 'access_token') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'access_token', ARGV[2], 'fingerprint', ARGV[3])
  return 1
end
return 0
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


ERROR_KEEP_SECONDS = 7 * 24 * 3600


class RedisTokenStore:
    """Redis store shared by every replica: survives restarts of the application.

    Keys (under `prefix`): `token:<name>` a hash, `token-requests:<name>` the budget (the
    platform's sliding window, `request_window.RedisRequestWindow`), `token-lock:<name>` the
    fetch lock, `token-error:<name>` the last failure.
    Works with or without `decode_responses`. With `secrets`, the cached access token is stored
    sealed (and its SHA-256 beside it, for compare-and-delete).
    """

    def __init__(
        self, redis: Redis, prefix: str = "mercato", *, secrets: SecretBox | None = None
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._secrets = secrets
        self._requests = RedisRequestWindow(redis)
        self._clear_if = redis.register_script(_CLEAR_IF_LUA)
        self._release = redis.register_script(_RELEASE_LUA)
        self._reseal = redis.register_script(_RESEAL_LUA)

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}:{kind}:{name}"

    async def load_token(self, name: str) -> StoredToken | None:
        """See `TokenStore`."""
        raw: dict[Any, Any] = await self._redis.hgetall(self._key("token", name))
        fields = {_text(k): _text(v) for k, v in raw.items()}
        try:
            stored = fields["access_token"]
            return StoredToken(
                access_token=self._secrets.open(stored) if self._secrets else stored,
                issued_at=float(fields["issued_at"]),
                expires_at=float(fields["expires_at"]),
            )
        except (KeyError, ValueError):
            return None
        except SecretsKeyError:
            return None  # only a cache: a token the key cannot open is fetched again

    async def save_token(self, name: str, token: StoredToken, *, now: float) -> None:
        """See `TokenStore`. The key expires with the token (garbage collection only)."""
        key = self._key("token", name)
        ttl_ms = max(1, math.ceil((token.expires_at - now) * 1000))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(
                key,
                mapping={
                    "access_token": (
                        self._secrets.seal(token.access_token)
                        if self._secrets
                        else token.access_token
                    ),
                    "fingerprint": token_fingerprint(token.access_token),
                    "issued_at": repr(token.issued_at),
                    "expires_at": repr(token.expires_at),
                },
            )
            pipe.pexpire(key, ttl_ms)
            await pipe.execute()

    async def clear_token(self, name: str, *, only_if: str | None = None) -> None:
        """See `TokenStore`."""
        fingerprint = token_fingerprint(only_if) if only_if is not None else ""
        await self._clear_if(keys=[self._key("token", name)], args=[fingerprint, only_if or ""])

    async def reseal_tokens(self) -> int:
        """Re-encrypt every cached token with the first key-encryption key (tokens cached in
        clear get sealed); answers how many were rewritten. Needs `secrets`."""
        assert self._secrets is not None, "reseal needs a SecretBox"
        count = 0
        async for key in self._redis.scan_iter(match=self._key("token", "*"), count=100):
            stored = await self._redis.hget(key, "access_token")
            if stored is None:
                continue
            stored_text = _text(stored)
            clear = self._secrets.open(stored_text)
            resealed = self._secrets.reseal(stored_text)
            # Compare-and-set: a token saved meanwhile by a replica is left as it is.
            args = [stored_text, resealed, token_fingerprint(clear)]
            count += int(await self._reseal(keys=[key], args=args))
        return count

    async def try_acquire_budget(
        self, name: str, *, now: float, limit: int, window: float
    ) -> tuple[bool, float]:
        """See `TokenStore`."""
        return await self._requests.take(
            self._key("token-requests", name), now=now, limit=limit, window=window
        )

    async def requests_in_window(self, name: str, *, now: float, window: float) -> int:
        """See `TokenStore`."""
        return await self._requests.count(self._key("token-requests", name), now=now, window=window)

    async def acquire_lock(self, name: str, owner: str, *, ttl: float, now: float) -> bool:
        """See `TokenStore`. The lock's ttl runs on Redis's clock: it only bounds a crash."""
        done = await self._redis.set(
            self._key("token-lock", name), owner, nx=True, px=max(1, math.ceil(ttl * 1000))
        )
        return bool(done)

    async def release_lock(self, name: str, owner: str) -> None:
        """See `TokenStore`."""
        await self._release(keys=[self._key("token-lock", name)], args=[owner])

    async def record_error(self, name: str, error: str | None) -> None:
        """See `TokenStore`. Kept a week: a status page should still say why after a quiet
        weekend, not forever."""
        key = self._key("token-error", name)
        if error is None:
            await self._redis.delete(key)
        else:
            await self._redis.set(key, error, ex=ERROR_KEEP_SECONDS)

    async def last_error(self, name: str) -> str | None:
        """See `TokenStore`."""
        raw = await self._redis.get(self._key("token-error", name))
        return None if raw is None else _text(raw)


def token_fingerprint(token: str) -> str:
    """The SHA-256 of a token: what compare-and-delete compares once tokens are sealed."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
