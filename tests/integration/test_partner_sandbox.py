"""The partner sandbox under real uvicorn, driven over HTTP by ResilientClient + TokenManager."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn

from mercato.integration.partner import create_partner_app
from mercato.platform.http import ResilientClient, RetryPolicy, UpstreamError
from mercato.platform.token_manager import TokenBudgetExhausted, TokenManager
from mercato.platform.token_stores import MemoryTokenStore

Partner = Callable[..., Any]


@pytest.fixture
async def start_partner() -> AsyncIterator[Callable[..., Any]]:
    """Start a sandbox (options of `create_partner_app`) on a free port; returns its base URL."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(**options: Any) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_partner_app(**options),
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        servers.append((server, task))
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, task in servers:
        server.should_exit = True
        await task


def client(base_url: str, **policy: float) -> ResilientClient:
    defaults: dict[str, float] = {"backoff_base": 0.05, "attempt_timeout": 2, "total_timeout": 5}
    return ResilientClient("partner", base_url=base_url, retry=RetryPolicy(**(defaults | policy)))  # type: ignore[arg-type]


def tokens(http: ResilientClient, base_url: str, **options: Any) -> TokenManager:
    return TokenManager(
        "partner",
        token_url=f"{base_url}/oauth/token",
        client_id="partner-client",
        client_secret="partner-secret",
        http=http,
        store=MemoryTokenStore(),
        **options,
    )


async def stats(base_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url) as raw:
        body: dict[str, Any] = (await raw.get("/_stats")).json()
        return body


async def fault(base_url: str, **body: Any) -> None:
    async with httpx.AsyncClient(base_url=base_url) as raw:
        (await raw.post("/_faults", json=body)).raise_for_status()


async def test_eight_fetches_use_one_token_and_invalidate_costs_one_more(
    start_partner: Partner,
) -> None:
    base = await start_partner()
    async with client(base) as http:
        tm = tokens(http, base)
        for _ in range(8):
            response = await tm.call("GET", "/api/orders", params={"limit": 5})
            assert response.status_code == 200
            body = response.json()
            assert body["total"] == 20 and len(body["orders"]) == 5
        assert (await stats(base))["tokens_issued"] == 1
        await tm.invalidate()
        assert (await tm.call("GET", "/api/orders")).status_code == 200
        figures = await stats(base)
        assert figures["tokens_issued"] == 2
        assert figures["requests_by_path"]["/api/orders"] == 9
        status = await tm.status()
        assert status.has_token and status.requests_last_hour == 2


async def test_revoked_tokens_are_renewed_once(start_partner: Partner) -> None:
    base = await start_partner()
    async with client(base) as http:
        tm = tokens(http, base)
        assert (await tm.call("GET", "/api/orders")).status_code == 200
        await fault(base, revoke_tokens=True)
        assert (await tm.call("GET", "/api/orders")).status_code == 200
        figures = await stats(base)
        assert figures["tokens_issued"] == 2
        assert figures["requests_by_path"]["/api/orders"] == 3  # ok, 401, ok


async def test_429_with_retry_after_and_503s_are_retried(start_partner: Partner) -> None:
    base = await start_partner()
    async with client(base) as http:
        tm = tokens(http, base)
        await fault(base, rate_limit_next=1, retry_after=1)
        started = time.monotonic()
        assert (await tm.call("GET", "/api/orders")).status_code == 200
        assert time.monotonic() - started >= 0.95  # Retry-After honoured
        await fault(base, fail_next=2, status=503)
        assert (await http.get("/products")).status_code == 200
        figures = await stats(base)
        assert figures["requests_by_path"]["/api/orders"] == 2
        assert figures["requests_by_path"]["/products"] == 3
        await fault(base, fail_next=10, status=500)
        with pytest.raises(UpstreamError) as caught:
            await http.get("/products")
        assert caught.value.status == 500


async def test_a_hanging_partner_is_cut_by_the_timeout(start_partner: Partner) -> None:
    base = await start_partner()
    async with client(base, attempt_timeout=0.3, total_timeout=0.8, attempts=3) as http:
        await fault(base, hang_seconds=3, hang_next=10)
        started = time.monotonic()
        with pytest.raises(UpstreamError):
            await http.get("/products")
        assert time.monotonic() - started < 1.5
        await fault(base, reset=True)
    async with client(base, attempt_timeout=0.3, total_timeout=2, attempts=3) as http:
        await fault(base, hang_seconds=3, hang_next=1)
        assert (await http.get("/products")).status_code == 200  # second attempt


async def test_token_budget_exhaustion_answers_429_with_retry_after(
    start_partner: Partner,
) -> None:
    base = await start_partner(token_budget=2)
    form = {"grant_type": "client_credentials"}
    async with httpx.AsyncClient(base_url=base) as raw:
        for _ in range(2):
            answer = await raw.post(
                "/oauth/token", data=form, auth=("partner-client", "partner-secret")
            )
            assert answer.status_code == 200
            assert answer.headers["Cache-Control"] == "no-store"
        answer = await raw.post(
            "/oauth/token", data=form, auth=("partner-client", "partner-secret")
        )
        assert answer.status_code == 429
        assert 3590 <= int(answer.headers["Retry-After"]) <= 3600
        assert answer.json()["error"] == "slow_down"
    # A manager configured with too large a budget still stops at the partner's 429.
    async with client(base) as http:
        tm = tokens(http, base, budget_per_hour=10)
        with pytest.raises(TokenBudgetExhausted) as caught:
            await tm.get_token()
        assert caught.value.retry_after > 3500
    assert (await stats(base))["token_requests_rejected"] == 2


async def test_token_endpoint_speaks_rfc_6749(start_partner: Partner) -> None:
    base = await start_partner(client_secret="s e/cret")
    async with httpx.AsyncClient(base_url=base) as raw:
        wrong = await raw.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=("partner-client", "nope"),
        )
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        assert wrong.headers["WWW-Authenticate"].startswith("Basic")
        post = await raw.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "partner-client",
                "client_secret": "s e/cret",
                "scope": "orders.read",
            },
        )
        assert post.status_code == 200
        assert post.json()["token_type"] == "Bearer" and post.json()["scope"] == "orders.read"
        grant = await raw.post(
            "/oauth/token",
            data={
                "grant_type": "password",
                "client_id": "partner-client",
                "client_secret": "s e/cret",
            },
        )
        assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
        unauthenticated = await raw.get("/api/orders")
        assert unauthenticated.status_code == 401
        bogus = await raw.get("/api/orders", headers={"Authorization": "Bearer bogus"})
        assert bogus.status_code == 401
    # The manager form-encodes the secret for client_secret_basic (RFC 6749 §2.3.1).
    async with client(base) as http:
        tm = TokenManager(
            "partner",
            token_url=f"{base}/oauth/token",
            client_id="partner-client",
            client_secret="s e/cret",
            http=http,
        )
        assert (await tm.call("GET", "/api/orders")).status_code == 200


async def test_products_seed_and_updates(start_partner: Partner) -> None:
    base = await start_partner(products=7, orders=3, seed=1)
    other = await start_partner(products=7, orders=3, seed=1)
    async with httpx.AsyncClient() as raw:
        page = (await raw.get(f"{base}/products", params={"limit": 5, "skip": 5})).json()
        assert page["total"] == 7 and page["skip"] == 5 and len(page["products"]) == 2
        keys = {"id", "title", "description", "price", "category", "brand", "stock", "rating"}
        assert keys <= set(page["products"][0])
        everything = (await raw.get(f"{base}/products", params={"limit": 0})).json()
        same = (await raw.get(f"{other}/products", params={"limit": 0})).json()
        assert everything == same and len(everything["products"]) == 7
        seeded = await raw.post(f"{base}/_seed", json={"products": 40, "orders": 12})
        assert seeded.json() == {"products": 40, "orders": 12}
        (
            await raw.post(f"{base}/_faults", json={"update_product": {"id": 3, "price": 9.99}})
        ).raise_for_status()
        product = (await raw.get(f"{base}/products", params={"limit": 1, "skip": 2})).json()
        assert product["products"][0]["price"] == 9.99
        missing = await raw.post(f"{base}/_faults", json={"update_product": {"id": 999}})
        assert missing.status_code == 404
