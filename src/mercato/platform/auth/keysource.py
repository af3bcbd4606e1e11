"""Where verifiers find identity's public keys, by `kid`.

`StaticKeySource` reads a JWKS handed over in-process (embedded mode); `RemoteJwksKeySource`
fetches `/.well-known/jwks.json` over HTTP (distributed mode). Both answer `jwt.PyJWK` objects,
whose `algorithm_name` the verifier matches against the token header.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import httpx
import jwt
import structlog

log = structlog.get_logger("mercato.auth")

JwksDocument = Mapping[str, Any]
JwksProvider = Callable[[], JwksDocument | Awaitable[JwksDocument]]

# A JWKS is a handful of keys; anything far larger is not one and is not worth parsing.
MAX_JWKS_BYTES = 256 * 1024


@runtime_checkable
class KeySource(Protocol):
    """Finds the public verification key named `kid`."""

    async def get(self, kid: str) -> jwt.PyJWK | None:
        """The key named `kid`, or None when no such key is published."""
        ...


def parse_jwks(document: JwksDocument) -> dict[str, jwt.PyJWK]:
    """The usable public signing keys of a JWKS document, by kid.

    Symmetric (`oct`) keys, keys carrying private members, keys meant for encryption and keys
    without a kid are skipped: none of them may ever verify an access token.
    """
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("not a JWKS document: no 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or kid in keys:
            continue
        if entry.get("kty") == "oct" or "d" in entry or entry.get("use", "sig") != "sig":
            log.warning("jwks key skipped", kid=kid, reason="not a public signing key")
            continue
        try:
            keys[kid] = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            log.warning("jwks key skipped", kid=kid, reason=str(exc))
    return keys


class StaticKeySource:
    """Keys from a JWKS handed over in-process (identity's own key set, embedded mode).

    `provider` answers the current JWKS document (sync or async). It is read on a cache miss, so
    a key added by rotation is found the first time a token names it; the document is re-parsed
    only when it changed, which keeps a flood of unknown kids cheap.
    """

    def __init__(self, provider: JwksProvider) -> None:
        self._provider = provider
        self._keys: dict[str, jwt.PyJWK] = {}
        self._document: Any = None
        self._lock = asyncio.Lock()

    async def get(self, kid: str) -> jwt.PyJWK | None:
        """The key named `kid`, reading the provider again when it is not known yet."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        # Single flight: concurrent misses queue here, and each looks again once it has the
        # lock, so the first token of a new key costs one read and the waiters find its result.
        async with self._lock:
            key = self._keys.get(kid)
            if key is None:
                await self.refresh()
                key = self._keys.get(kid)
        return key

    async def refresh(self) -> None:
        """Re-read the provider now (also drops keys it no longer publishes)."""
        document = self._provider()
        if inspect.isawaitable(document):
            document = await document
        if document != self._document:
            self._keys = parse_jwks(document)
            # A private copy: the provider may mutate its dict in place on rotation.
            self._document = copy.deepcopy(document)


class RemoteJwksKeySource:
    """Keys fetched from a JWKS URL and cached for `ttl` seconds.

    An unknown kid triggers a refetch, at most once per `min_refetch_interval` seconds, so
    tokens naming random kids cannot turn each request into a request to identity; the periodic
    refresh of a stale cache does not count against that limit, so the first token of a freshly
    rotated key always gets its refetch (identity's JWKS endpoint reads its key table afresh,
    whichever replica answers). When a fetch fails the cached keys keep being served (identity
    being briefly down must not log everyone out); the failure is logged.
    """

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        *,
        ttl: float = 300.0,
        min_refetch_interval: float = 1.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._client = client
        self._ttl = ttl
        self._min_interval = min_refetch_interval
        self._timeout = httpx.Timeout(timeout)
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._miss_fetched_at: float | None = None  # last fetch made for an unknown kid
        self._lock = asyncio.Lock()

    async def get(self, kid: str) -> jwt.PyJWK | None:
        """The key named `kid`: from the cache while fresh, else after a (rate-limited) refetch."""
        key = self._keys.get(kid)
        if key is not None:
            if not self._is_fresh():
                await self._refresh_stale()
            return self._keys.get(kid, key)
        # The lock makes concurrent misses wait for the fetch in flight and then reuse its
        # result (the key is looked up again inside), instead of piling up.
        async with self._lock:
            key = self._keys.get(kid)
            if key is None and self._may_fetch_for_miss():
                self._miss_fetched_at = self._clock()
                await self._fetch()
                key = self._keys.get(kid)
        return key

    async def refresh(self) -> bool:
        """Fetch now regardless of the rate limit (start-up, readiness); answers success."""
        async with self._lock:
            return await self._fetch()

    def _is_fresh(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at < self._ttl

    def _may_fetch_for_miss(self) -> bool:
        # The very first fetch is not a miss against a known key set: always allowed.
        if self._fetched_at is None and self._attempted_at is None:
            return True
        last = self._miss_fetched_at
        return last is None or self._clock() - last >= self._min_interval

    async def _refresh_stale(self) -> None:
        async with self._lock:
            stale = not self._is_fresh()
            attempted = self._attempted_at
            # A failing identity is asked at most once per interval, not once per request.
            if stale and (attempted is None or self._clock() - attempted >= self._min_interval):
                await self._fetch()

    async def _fetch(self) -> bool:
        self._attempted_at = self._clock()
        try:
            response = await self._client.get(
                self.url, timeout=self._timeout, headers={"Accept": "application/json"}
            )
            response.raise_for_status()
            if len(response.content) > MAX_JWKS_BYTES:
                raise ValueError("JWKS document too large")
            keys = parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:  # JSONDecodeError is a ValueError
            log.warning(
                "jwks fetch failed; serving cached keys",
                url=self.url,
                error=f"{type(exc).__name__}: {exc}",
                cached_keys=len(self._keys),
            )
            return False
        self._keys = keys
        self._fetched_at = self._clock()
        return True
