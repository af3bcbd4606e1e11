"""TokenManager: budget, sharing, renewal and 401 handling, on a simulated clock.

The token endpoint and the API are faked in-process (`FakePartner`, an `httpx.MockTransport`):
that is the external world, which enforces its own budget, not the component under test.
"""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
from dataclasses import dataclass, field

import httpx
import pytest

from mercato.platform.http import ResilientClient, RetryPolicy
from mercato.platform.token_manager import (
    TokenBudgetExhausted,
    TokenManager,
    TokenRequestFailed,
)
from mercato.platform.token_stores import MemoryTokenStore, TokenStore

HOUR = 3600.0
CLIENT_ID, CLIENT_SECRET = "partner-client", "partner-secret"


class SimClock:
    """Epoch seconds that move only when the test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakePartner:
    """Token endpoint (budget per rolling hour) and an orders API accepting its tokens."""

    clock: SimClock
    budget: int = 5
    lifetime: int = 3600
    token_status: int | None = None  # force an answer from the token endpoint
    api_refuses_all: bool = False
    issued: list[float] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)
    rejected: int = 0
    api_calls: int = 0
    api_401: int = 0

    async def handler(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)  # let concurrent callers interleave, as a network would
        now = self.clock()
        if request.url.path == "/oauth/token":
            return self._token(request, now)
        self.api_calls += 1
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.api_refuses_all or not self.valid(presented, now):
            self.api_401 += 1
            return httpx.Response(401, headers={"WWW-Authenticate": "Bearer"})
        return httpx.Response(200, json={"orders": [], "total": 0})

    def _token(self, request: httpx.Request, now: float) -> httpx.Response:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return httpx.Response(401, json={"error": "invalid_client"})
        if self.token_status is not None:
            return httpx.Response(self.token_status, json={"error": "temporarily_unavailable"})
        if self.in_window(now) >= self.budget:
            self.rejected += 1
            return httpx.Response(429, headers={"Retry-After": "60"}, json={"error": "slow_down"})
        token = secrets.token_hex(16)
        self.tokens[token] = now + self.lifetime
        self.issued.append(now)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}
        return httpx.Response(200, json=body)

    def in_window(self, now: float) -> int:
        return sum(1 for t in self.issued if now - HOUR < t <= now)

    def valid(self, token: str, now: float) -> bool:
        return self.tokens.get(token, 0.0) > now

    def revoke_all(self) -> None:
        self.tokens.clear()

    def max_in_any_rolling_hour(self) -> int:
        # The busiest window starts at some issue time.
        return max((self.in_window(t + HOUR - 1e-6) for t in self.issued), default=0)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url="https://partner.test", transport=httpx.MockTransport(self.handler)
        )


def manager(
    partner: FakePartner,
    store: TokenStore,
    http: ResilientClient | httpx.AsyncClient | None = None,
    **options: float,
) -> TokenManager:
    return TokenManager(
        "partner",
        token_url="https://partner.test/oauth/token",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        http=http or partner.client(),
        store=store,
        clock=partner.clock,
        budget_per_hour=5,
        lock_poll=0.001,
        **options,  # type: ignore[arg-type]
    )


async def simulate(
    store: TokenStore,
    hours: float,
    *,
    instances: int = 10,
    seed: int = 7,
) -> FakePartner:
    """Run `instances` managers for `hours` simulated hours, each calling every 2-8 s.

    Every second of simulated time, the instances due call concurrently; every token they are
    handed must be valid upstream at that moment. Instance 0 restarts (new object, same store)
    every 5 hours. Returns the partner for its counters.
    """
    rng = random.Random(seed)
    clock = SimClock()
    partner = FakePartner(clock)
    managers = [manager(partner, store) for _ in range(instances)]
    due = [clock.now + rng.uniform(0, 8) for _ in managers]
    failures: list[str] = []
    end = clock.now + hours * HOUR
    tick = 0

    async def one(i: int) -> None:
        if tick % 20 == i % 20:  # some calls go all the way through the HTTP API
            response = await managers[i].call("GET", "/api/orders")
            if response.status_code != 200:
                failures.append(f"{i} HTTP {response.status_code} at {clock.now}")
            return
        token = await managers[i].get_token()
        if not partner.valid(token, clock.now):
            failures.append(f"{i} got an invalid token at {clock.now}")

    while clock.now < end:
        tick += 1
        if tick % (5 * 3600) == 0:
            managers[0] = manager(partner, store)  # a restart: nothing local survives
        ready = [i for i, when in enumerate(due) if when <= clock.now]
        await asyncio.gather(*(one(i) for i in ready))
        for i in ready:
            due[i] = clock.now + rng.uniform(2, 8)
        clock.now += 1.0
    assert failures == []
    assert partner.api_401 == 0
    assert partner.rejected == 0
    assert partner.max_in_any_rolling_hour() <= 5
    return partner


async def test_24_hours_ten_instances_never_exceed_the_budget() -> None:
    store = MemoryTokenStore()
    partner = await simulate(store, hours=24)
    print(f"\n24 h, 10 instances, budget 5/h: {len(partner.issued)} token requests")
    # A 1 h token renewed with 6 min (10 %) to spare: one request per 54 min.
    assert 24 <= len(partner.issued) <= 28
    gaps = [b - a for a, b in zip(partner.issued, partner.issued[1:], strict=False)]
    assert min(gaps) >= 0.9 * 3240


async def test_revocation_storm_never_exceeds_the_budget() -> None:
    """Tokens revoked every 10 min for 3 h: 18 renewals wanted, 5 an hour allowed."""
    clock = SimClock()
    partner = FakePartner(clock)
    store = MemoryTokenStore()
    managers = [manager(partner, store) for _ in range(10)]
    outcomes: dict[str, int] = {"ok": 0, "refused": 0, "budget": 0}

    async def one(tm: TokenManager) -> None:
        try:
            response = await tm.call("GET", "/api/orders")
        except TokenBudgetExhausted:
            outcomes["budget"] += 1
        else:
            outcomes["ok" if response.status_code == 200 else "refused"] += 1

    for second in range(3 * 3600):
        if second % 600 == 300:
            partner.revoke_all()
        if second % 5 == 0:
            await asyncio.gather(*(one(tm) for tm in managers))
        clock.now += 1
    assert partner.rejected == 0  # our budget stopped us before the upstream had to
    assert partner.max_in_any_rolling_hour() == 5
    assert outcomes["ok"] > 0 and outcomes["budget"] > 0
    print(f"\nrevocation storm: {len(partner.issued)} token requests, {outcomes}")


async def test_thousand_concurrent_callers_at_expiry_make_one_request() -> None:
    clock = SimClock()
    partner = FakePartner(clock)
    tm = manager(partner, MemoryTokenStore())
    first = await tm.get_token()
    assert len(partner.issued) == 1
    clock.now += 3600  # expired
    tokens = await asyncio.gather(*(tm.get_token() for _ in range(1000)))
    assert len(partner.issued) == 2
    assert set(tokens) == {tokens[0]} and tokens[0] != first


async def test_concurrent_callers_on_many_instances_make_one_request() -> None:
    clock = SimClock()
    partner = FakePartner(clock)
    store = MemoryTokenStore()
    managers = [manager(partner, store) for _ in range(10)]
    tokens = await asyncio.gather(*(m.get_token() for m in managers for _ in range(100)))
    assert len(partner.issued) == 1
    assert len(set(tokens)) == 1


async def test_invalidate_costs_exactly_one_more_request() -> None:
    clock = SimClock()
    partner = FakePartner(clock)
    tm = manager(partner, MemoryTokenStore())
    token = await tm.get_token()
    await tm.invalidate(token)
    await tm.invalidate(token)  # stale invalidations are no-ops
    await asyncio.gather(*(tm.get_token() for _ in range(50)))
    assert len(partner.issued) == 2
    await tm.invalidate(token)  # the old one again: keeps the new token
    await tm.get_token()
    assert len(partner.issued) == 2


async def test_invalidate_on_one_replica_is_seen_by_the_others() -> None:
    clock = SimClock()
    partner = FakePartner(clock)
    store = MemoryTokenStore()
    here, there = manager(partner, store), manager(partner, store)
    token = await here.get_token()
    assert await there.get_token() == token  # adopted from the store, now cached there too
    await here.invalidate()  # DELETE /api/v1/integration/token, answered by `here`
    renewed = await there.get_token()
    assert renewed != token and len(partner.issued) == 2
    assert await here.get_token() == renewed


async def test_401_drops_refetches_once_and_retries_once() -> None:
    clock = SimClock()
    partner = FakePartner(clock)
    tm = manager(partner, MemoryTokenStore())
    assert (await tm.call("GET", "/api/orders")).status_code == 200
    partner.revoke_all()
    responses = await asyncio.gather(*(tm.call("GET", "/api/orders") for _ in range(20)))
    assert {r.status_code for r in responses} == {200}
    assert len(partner.issued) == 2


async def test_401_twice_is_returned_after_a_single_retry() -> None:
    clock = SimClock()
    partner = FakePartner(clock)
    partner.api_refuses_all = True
    tm = manager(partner, MemoryTokenStore())
    response = await tm.call("GET", "/api/orders")
    assert response.status_code == 401
    assert partner.api_calls == 2
    assert len(partner.issued) == 2


async def test_a_stream_follows_the_same_401_rule() -> None:
    clock = SimClock()
    partner = FakePartner(clock)
    tm = manager(partner, MemoryTokenStore())
    await tm.get_token()
    partner.revoke_all()
    via = ResilientClient("partner", client=partner.client())
    async with tm.stream("GET", "/api/orders", via=via) as response:
        assert response.status_code == 200
        assert (await response.aread()).startswith(b"{")
    assert partner.api_401 == 1 and len(partner.issued) == 2
    partner.api_refuses_all = True
    async with tm.stream("GET", "/api/orders", via=via) as response:
        assert response.status_code == 401  # retried once, then the answer is the caller's
    assert partner.api_calls == 4 and len(partner.issued) == 3


async def test_any_async_client_may_authenticate_with_the_manager() -> None:
    clock = SimClock()
    partner = FakePartner(clock)
    tm = manager(partner, MemoryTokenStore())
    async with partner.client() as plain:
        assert (await plain.get("/api/orders", auth=tm)).status_code == 200
        partner.revoke_all()
        assert (await plain.get("/api/orders", auth=tm)).status_code == 200
    assert len(partner.issued) == 2
    with pytest.raises(RuntimeError, match="asynchronous"):
        httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200))).get(
            "https://partner.test/api/orders", auth=tm
        )


async def test_no_budget_and_no_token_raises_with_retry_after() -> None:
    clock = SimClock()
    partner = FakePartner(clock, budget=100)
    tm = manager(partner, MemoryTokenStore())
    for _ in range(5):
        await tm.get_token()
        await tm.invalidate()
        clock.now += 60
    with pytest.raises(TokenBudgetExhausted) as caught:
        await tm.get_token()
    assert len(partner.issued) == 5  # our budget stopped us before the upstream did
    assert caught.value.retry_after == pytest.approx(HOUR - 300)
    assert CLIENT_SECRET not in str(caught.value)
    clock.now += caught.value.retry_after + 1
    await tm.get_token()
    assert len(partner.issued) == 6


async def test_no_budget_keeps_using_a_valid_token() -> None:
    clock = SimClock()
    partner = FakePartner(clock)
    store = MemoryTokenStore()
    tm = manager(partner, store)
    token = await tm.get_token()
    for _ in range(4):  # another process spends the rest of the budget
        await store.try_acquire_budget("partner", now=clock.now, limit=5, window=HOUR)
    clock.now += 3500  # inside the renewal window, still valid
    assert await tm.get_token() == token
    assert len(partner.issued) == 1
    status = await tm.status()
    assert status.has_token and status.requests_last_hour == 5
    assert status.last_error is not None and "budget" in status.last_error


async def test_every_replica_reports_the_last_token_failure() -> None:
    clock = SimClock()
    partner = FakePartner(clock, token_status=503)
    store = MemoryTokenStore()
    failing, watching = manager(partner, store), manager(partner, store)
    with pytest.raises(TokenRequestFailed):
        await failing.get_token()
    reported = (await watching.status()).last_error
    assert reported is not None and "503" in reported
    partner.token_status = None
    clock.now += 120
    await watching.get_token()
    assert (await failing.status()).last_error is None


async def test_upstream_429_on_the_token_endpoint() -> None:
    clock = SimClock()
    partner = FakePartner(clock, budget=0)
    tm = manager(partner, MemoryTokenStore())
    with pytest.raises(TokenBudgetExhausted) as caught:
        await tm.get_token()
    assert caught.value.retry_after == 60


async def test_failed_fetch_is_shared_by_waiters_and_spends_one_request() -> None:
    clock = SimClock()
    partner = FakePartner(clock, token_status=503)
    store = MemoryTokenStore()
    http = ResilientClient(
        "partner",
        transport=httpx.MockTransport(partner.handler),
        retry=RetryPolicy(attempts=4, backoff_base=0.001),
    )
    tm = manager(partner, store, http=http)
    results = await asyncio.gather(*(tm.get_token() for _ in range(100)), return_exceptions=True)
    assert all(isinstance(r, TokenRequestFailed) for r in results)
    # One fetch, one attempt (each attempt would spend budget): one budget entry.
    assert await store.requests_in_window("partner", now=clock.now, window=HOUR) == 1
    assert "503" in str(results[0])


async def test_renewal_rule_suits_short_and_long_lifetimes() -> None:
    clock = SimClock()
    partner = FakePartner(clock, lifetime=300, budget=100)
    tm = manager(partner, MemoryTokenStore())
    token = await tm.get_token()
    clock.now += 269  # renew at 300 - min(600, 30) = 270
    assert await tm.get_token() == token
    clock.now += 1
    assert await tm.get_token() != token
    assert len(partner.issued) == 2
    status = await tm.status()
    assert status.expires_at is not None and status.renew_at is not None
    assert (status.expires_at - status.renew_at).total_seconds() == pytest.approx(30)


async def test_secrets_stay_out_of_repr_status_and_logs() -> None:
    from structlog.testing import capture_logs

    clock = SimClock()
    partner = FakePartner(clock)
    tm = manager(partner, MemoryTokenStore())
    with capture_logs() as logs:
        token = await tm.get_token()
    status = await tm.status()
    for text in (repr(tm), str(tm), status.model_dump_json(), repr(logs), repr(vars(tm))):
        assert CLIENT_SECRET not in text
        assert token not in text


async def test_client_secret_post() -> None:
    clock = SimClock()
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        assert "Authorization" not in request.headers
        return httpx.Response(200, json={"access_token": "t", "token_type": "bearer"})

    tm = TokenManager(
        "p",
        token_url="https://p.test/token",
        client_id="id",
        client_secret="s e/cret",
        scope="orders.read",
        http=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        clock=clock,
        auth_method="client_secret_post",
    )
    assert await tm.get_token() == "t"
    assert b"client_secret=s+e%2Fcret" in seen[0]
    assert b"scope=orders.read" in seen[0]
    assert (await tm.status()).expires_at is not None  # expires_in missing: an hour assumed
