"""OAuth2 client-credentials tokens for one upstream, within its token-request budget.

Upstreams often cap token requests (5 an hour is common) while we call their API far more often,
so a `TokenManager`:

- caches the token in a `TokenStore` shared by every replica and renews it shortly before expiry;
- lets concurrent callers of one process share a single fetch, and across replicas lets one
  replica fetch under a short lock while the others keep the still-valid token or wait for it;
- records every token request in a rolling-hour budget kept in the store (so it survives restarts
  and is shared), checked and recorded atomically *before* the request; with no budget left it
  keeps using a still-valid token, else raises `TokenBudgetExhausted`;
- is an `httpx.Auth`: on a 401 from the API it drops that token, fetches once more and retries
  the request once (`async_auth_flow`, written once for plain requests and streams alike; `call`
  and `stream` send with it, or pass `auth=manager` to any `httpx.AsyncClient`).

The client secret is never logged nor shown in `repr`, `status()` or an exception; neither is a
token. Every decision reads the injected `clock` (epoch seconds), so a day runs in a test second.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote_plus

import httpx
import structlog
from pydantic import BaseModel, SecretStr

from mercato.platform import metrics
from mercato.platform.http import ResilientClient, Sleep, UpstreamError, parse_retry_after
from mercato.platform.token_stores import MemoryTokenStore, StoredToken, TokenStore

log = structlog.get_logger("mercato.integration.tokens")

BUDGET_WINDOW = 3600.0
"""The budget is per rolling hour."""


class TokenError(Exception):
    """No token could be had from `upstream`."""

    def __init__(self, upstream: str, message: str) -> None:
        super().__init__(f"{upstream}: {message}")
        self.upstream = upstream


class TokenBudgetExhausted(TokenError):
    """The token-request budget is spent (ours or the upstream's 429); retry after `retry_after`."""

    def __init__(self, upstream: str, retry_after: float) -> None:
        super().__init__(upstream, f"token budget exhausted; retry after {retry_after:.0f} s")
        self.retry_after = retry_after


class TokenRequestFailed(TokenError):
    """The token endpoint failed or refused (`error` is its RFC 6749 code when it gave one)."""

    def __init__(self, upstream: str, *, status: int | None, error: str) -> None:
        suffix = f" (HTTP {status})" if status is not None and str(status) not in error else ""
        super().__init__(upstream, f"token request failed: {error}{suffix}")
        self.status = status
        self.error = error


class TokenStatus(BaseModel):
    """What an operator may see about an upstream's token — never the token itself."""

    name: str
    has_token: bool
    expires_at: datetime | None
    renew_at: datetime | None
    requests_last_hour: int
    budget_per_hour: int
    last_error: str | None = None
    # The upstream's circuit breaker (the one its token requests go through); None without one.
    circuit_state: metrics.CircuitState | None = None


class TokenManager(httpx.Auth):
    """Client-credentials tokens of one upstream, and the `httpx.Auth` that presents them; see
    the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        http: ResilientClient | httpx.AsyncClient,
        scope: str | None = None,
        budget_per_hour: int = 5,
        store: TokenStore | None = None,
        clock: Callable[[], float] = time.time,
        renew_before_seconds: float = 600.0,
        renew_fraction: float = 0.10,
        auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic",
        lock_ttl: float = 30.0,
        lock_wait: float = 15.0,
        lock_poll: float = 0.05,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = name
        self.token_url = token_url
        self.client_id = client_id
        self._secret = SecretStr(client_secret)
        self.scope = scope
        self.budget_per_hour = budget_per_hour
        self.store: TokenStore = store if store is not None else MemoryTokenStore()
        self.renew_before_seconds = renew_before_seconds
        self.renew_fraction = renew_fraction
        self.auth_method = auth_method
        self._http = http
        self._clock = clock
        self._lock_ttl = lock_ttl
        self._lock_wait = lock_wait
        self._lock_poll = lock_poll
        self._sleep = sleep
        self._token: StoredToken | None = None
        # After a failed renewal while the token is still valid, wait until then to try again.
        self._hold_until = 0.0
        self._inflight: asyncio.Task[str] | None = None
        # The last token the API refused: never adopted again, even if a stale read offers it.
        self._refused: str | None = None

    def __repr__(self) -> str:
        return f"TokenManager(name={self.name!r}, token_url={self.token_url!r})"

    def secret_differs(self, secret: str) -> bool:
        """Whether `secret` is not this manager's (constant time; the secret is never shown)."""
        return not hmac.compare_digest(self._secret.get_secret_value().encode(), secret.encode())

    def renew_at(self, token: StoredToken) -> float:
        """When to start renewing: `min(renew_before_seconds, renew_fraction * lifetime)` early.

        `min`, not `max`: the margin only has to cover clock skew and calls in flight, and `max`
        would renew a token of 10 minutes or less at once, on every call, burning the budget. A
        1 h token is renewed at 54 min, so about 1.1 requests an hour against a budget of 5.
        """
        margin = min(self.renew_before_seconds, self.renew_fraction * token.lifetime)
        return token.expires_at - margin

    async def get_token(self) -> str:
        """A valid access token, fetching or renewing it when due."""
        token, now = self._token, self._clock()
        due = token is None or (now >= self.renew_at(token) and now >= self._hold_until)
        if token is not None and now < token.expires_at and not due:
            if await self._still_shared(token):
                return token.access_token
            self._token = None
        # One fetch per process at a time; every concurrent caller awaits its outcome.
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.get_running_loop().create_task(self._refresh())
            self._inflight.add_done_callback(_consume_exception)
        return await asyncio.shield(self._inflight)

    async def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (only if it is still `token`, when one is given)."""
        if token is not None:
            self._refused = token
        if token is None or (self._token is not None and self._token.access_token == token):
            self._token = None
            self._hold_until = 0.0
        # Compare-and-delete: a replica dropping a token someone else already replaced is a no-op.
        await self.store.clear_token(self.name, only_if=token)

    async def _still_shared(self, token: StoredToken) -> bool:
        """Whether the store still holds `token`: an admin's invalidation, or another replica's
        401, reached this process only through the store (one read; the HTTP call it guards
        costs far more). If the store cannot answer, the copy here serves meanwhile."""
        try:
            stored = await self.store.load_token(self.name)
        except Exception as exc:
            log.warning(
                "token store unavailable; using the cached token",
                upstream=self.name,
                error=type(exc).__name__,
            )
            return True
        return stored is not None and stored.access_token == token.access_token

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Not offered: the token store and the fetch are asynchronous."""
        raise RuntimeError("TokenManager authenticates asynchronous clients only")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """The bearer token on `request`; on a 401 drop it, fetch once more and retry once."""
        token = await self.get_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        log.info("upstream refused the token; fetching another", upstream=self.name)
        await self.invalidate(token)
        token = await self.get_token()
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    async def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send through this manager's client with its token (`async_auth_flow`'s 401 rule)."""
        # Fetched before the attempt, so a token request never runs inside the API attempt's
        # timeout nor takes its circuit breaker's half-open probe; the flow finds it cached.
        await self.get_token()
        return await self._http.request(method, url, auth=self, **kwargs)

    @asynccontextmanager
    async def stream(
        self, method: str, url: str, *, via: ResilientClient | None = None, **kwargs: Any
    ) -> AsyncIterator[httpx.Response]:
        """`call` for a body to iterate, with the same 401 rule.

        `via` sends through another upstream's client (an API that trusts this token server
        but is not it, such as catalog for identity's tokens); by default this manager's own.
        """
        http = via or self._http
        await self.get_token()  # as in `call`
        async with http.stream(method, url, auth=self, **kwargs) as response:
            yield response

    async def status(self) -> TokenStatus:
        """The shared state as seen from here."""
        now = self._clock()
        stored = await self.store.load_token(self.name)
        valid = stored is not None and now < stored.expires_at
        used = await self.store.requests_in_window(self.name, now=now, window=BUDGET_WINDOW)
        return TokenStatus(
            name=self.name,
            has_token=valid,
            expires_at=_utc(stored.expires_at) if stored is not None and valid else None,
            renew_at=_utc(self.renew_at(stored)) if stored is not None and valid else None,
            requests_last_hour=used,
            budget_per_hour=self.budget_per_hour,
            last_error=await self.store.last_error(self.name),
            circuit_state=metrics.circuit_state(
                self._http.breaker if isinstance(self._http, ResilientClient) else None
            ),
        )

    def _fresh(self, token: StoredToken | None, now: float) -> bool:
        return token is not None and self._valid(token, now) and now < self.renew_at(token)

    def _valid(self, token: StoredToken | None, now: float) -> bool:
        return token is not None and now < token.expires_at and token.access_token != self._refused

    async def _refresh(self) -> str:
        stored = await self.store.load_token(self.name)
        if stored is not None and self._fresh(stored, self._clock()):
            return self._adopt(stored)  # another replica renewed it
        owner = uuid.uuid4().hex
        give_up_at = time.monotonic() + self._lock_wait  # real time: waiting is real
        while True:
            now = self._clock()
            if await self.store.acquire_lock(self.name, owner, ttl=self._lock_ttl, now=now):
                try:
                    # Re-read under the lock: a replica may have renewed since we looked.
                    stored = await self.store.load_token(self.name)
                    if stored is not None and self._fresh(stored, now):
                        return self._adopt(stored)
                    return await self._fetch(stored)
                finally:
                    await self.store.release_lock(self.name, owner)
            # Another replica is fetching: a token that is still valid serves meanwhile.
            if stored is not None and self._valid(stored, now):
                self._token = stored
                return stored.access_token
            if time.monotonic() >= give_up_at:
                raise TokenError(self.name, "timed out waiting for another replica's fetch")
            await self._sleep(self._lock_poll)
            stored = await self.store.load_token(self.name)
            if stored is not None and self._fresh(stored, self._clock()):
                return self._adopt(stored)

    def _adopt(self, token: StoredToken) -> str:
        self._token = token
        self._hold_until = 0.0
        return token.access_token

    async def _fetch(self, current: StoredToken | None) -> str:
        now = self._clock()
        try:
            if isinstance(self._http, ResilientClient) and self._http.breaker.state == "open":
                # Spend no budget on a request the breaker would refuse anyway.
                raise TokenRequestFailed(self.name, status=None, error="circuit open")
            ok, retry_after = await self.store.try_acquire_budget(
                self.name, now=now, limit=self.budget_per_hour, window=BUDGET_WINDOW
            )
            if not ok:
                raise TokenBudgetExhausted(self.name, retry_after)
            token = await self._request_token(now)
        except TokenError as exc:
            metrics.token_request(self.name, _outcome(exc))
            await self._record_error(str(exc))
            if current is None or not self._valid(current, now):
                log.warning("token unavailable", upstream=self.name, error=str(exc))
                raise
            # Keep the still-valid token; try again later, not on every call.
            wait = getattr(exc, "retry_after", 60.0)
            self._hold_until = now + min(wait, (current.expires_at - now) / 2)
            log.warning(
                "token renewal failed; keeping the current one",
                upstream=self.name,
                error=str(exc),
                expires_in=round(current.expires_at - now),
            )
            self._token = current
            return current.access_token
        metrics.token_request(self.name, "ok")
        await self.store.save_token(self.name, token, now=self._clock())
        await self._record_error(None)
        log.info("token fetched", upstream=self.name, expires_in=round(token.lifetime))
        return self._adopt(token)

    async def _record_error(self, error: str | None) -> None:
        # Bookkeeping for the status answer: a store that cannot take it must not turn a token
        # that was fetched (or a failure already being reported) into another failure.
        try:
            await self.store.record_error(self.name, error)
        except Exception as exc:
            log.warning(
                "could not record the token error", upstream=self.name, error=type(exc).__name__
            )

    async def _request_token(self, now: float) -> StoredToken:
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        headers = {"Accept": "application/json"}
        secret = self._secret.get_secret_value()
        if self.auth_method == "client_secret_basic":
            # RFC 6749 §2.3.1: form-encode id and secret before joining them.
            pair = f"{quote_plus(self.client_id)}:{quote_plus(secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            data |= {"client_id": self.client_id, "client_secret": secret}
        try:
            if isinstance(self._http, ResilientClient):
                # One attempt: each attempt spends budget, so retrying is get_token's decision.
                policy = self._http.retry.single_attempt()
                response = await self._http.request(
                    "POST", self.token_url, data=data, headers=headers, retry=policy
                )
            else:
                response = await self._http.post(self.token_url, data=data, headers=headers)
        except UpstreamError as exc:
            if exc.status == 429:
                raise TokenBudgetExhausted(self.name, exc.retry_after or 60.0) from None
            raise TokenRequestFailed(self.name, status=exc.status, error=exc.reason) from None
        except httpx.HTTPError as exc:
            raise TokenRequestFailed(self.name, status=None, error=type(exc).__name__) from None
        return self._parse(response, now)

    def _parse(self, response: httpx.Response, now: float) -> StoredToken:
        status = response.status_code
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise TokenBudgetExhausted(self.name, retry_after or 60.0)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TokenRequestFailed(self.name, status=status, error="not a JSON object")
        if status != 200:
            error = body.get("error")
            raise TokenRequestFailed(
                self.name, status=status, error=error if isinstance(error, str) else "error"
            )
        access_token = body.get("access_token")
        token_type = body.get("token_type")
        expires_in = body.get("expires_in", 3600)  # RFC 6749: optional; assume an hour
        if (
            not isinstance(access_token, str)
            or not access_token
            or not isinstance(token_type, str)
            or token_type.lower() != "bearer"
            or not isinstance(expires_in, int | float)
            or expires_in <= 0
        ):
            raise TokenRequestFailed(self.name, status=status, error="malformed token response")
        # Lifetime counted from when we asked: errs on the early side.
        return StoredToken(access_token=access_token, issued_at=now, expires_at=now + expires_in)


def _outcome(exc: TokenError) -> str:
    """How `mercato_upstream_token_requests_total` labels a failed token request."""
    if isinstance(exc, TokenBudgetExhausted):
        return "budget_exhausted"
    if isinstance(exc, TokenRequestFailed):
        return "failed"
    return "error"


def _consume_exception(task: asyncio.Task[str]) -> None:
    # Every waiter sees the exception; this only silences "never retrieved" if all were cancelled.
    if not task.cancelled():
        task.exception()


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
