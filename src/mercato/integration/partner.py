"""The partner sandbox: a small external provider on localhost for tests and demos (DESIGN §5).

Nothing in the product depends on it; it plays the outside world. Endpoints:

- `POST /oauth/token` — client credentials (`client_secret_basic` or `client_secret_post`, form
  `grant_type=client_credentials`, optional `scope`); RFC 6749 answers and errors. At most
  `token_budget` tokens are issued per rolling hour; past that 429, `Retry-After` and
  `{"error": "slow_down", "error_description": ...}`. Tokens are opaque random strings.
- `GET /products?limit&skip` — DummyJSON shape (`limit=0` means all); no auth.
- `GET /api/orders?limit&skip` — bearer token required (401 otherwise).
- `GET /_stats` — `{tokens_issued, token_requests_rejected, requests_by_path, active_tokens}`.
- `POST /_seed` `{"products": N, "orders": M}` — regenerate the data from the seed; with
  `"bad_products": [{...}, ...]` those raw objects are served after the seeded products as they
  are (a `"NaN"` price, a price of 1e20, no title...), for tests of a sync meeting bad data.

Test hooks, `POST /_faults` with a JSON object holding any of these keys (combinable):

- `{"revoke_tokens": true}` — every token issued so far answers 401 from now on;
- `{"fail_next": N, "status": 503}` — the next N API calls answer that status;
- `{"rate_limit_next": N, "retry_after": 1}` — the next N API calls answer 429 + Retry-After;
- `{"hang_seconds": S, "hang_next": 1}` — the next call(s) sleep S seconds before answering;
- `{"update_product": {"id": 3, "price": 9.99, ...}}` — change fields of one product;
- `{"paths": [...]}` — which paths the faults of this request hit (default `/products` and
  `/api/orders`; add `/oauth/token` to hit the token endpoint);
- `{"reset": true}` — drop pending faults.

Faults queue in order; each request consumes at most one. Requests that met a fault are counted
in `requests_by_path` like any other. `clock` (epoch seconds) drives token expiry and the budget.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import math
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mercato.platform.request_window import MemoryRequestWindow

DEFAULT_FAULT_PATHS = ("/products", "/api/orders")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_CATEGORIES = ("beauty", "fragrances", "furniture", "groceries", "laptops", "smartphones")
_BRANDS = ("Acme", "Globex", "Initech", "Umbrella", "Soylent", "Hooli", "Stark")
_ADJECTIVES = ("Classic", "Smart", "Eco", "Deluxe", "Compact", "Vintage", "Ultra", "Handmade")
_NOUNS = ("Lamp", "Chair", "Phone", "Laptop", "Perfume", "Mug", "Backpack", "Blender", "Desk")
_ORDER_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


class SeedRequest(BaseModel):
    """Body of `POST /_seed`."""

    products: int = Field(default=30, ge=0, le=10_000)
    orders: int = Field(default=20, ge=0, le=10_000)
    # Served as given, after the seeded products: the sandbox plays a provider with bad data.
    bad_products: list[Any] = Field(default_factory=list, max_length=1000)


class FaultsRequest(BaseModel):
    """Body of `POST /_faults` (see the module docstring)."""

    revoke_tokens: bool = False
    fail_next: int = Field(default=0, ge=0)
    status: int = Field(default=503, ge=400, le=599)
    rate_limit_next: int = Field(default=0, ge=0)
    retry_after: int = Field(default=1, ge=0)
    hang_seconds: float = Field(default=0.0, ge=0, le=600)
    hang_next: int = Field(default=1, ge=0)
    update_product: dict[str, Any] | None = None
    paths: list[str] | None = None
    reset: bool = False


@dataclass
class _Fault:
    kind: str  # "fail" | "rate_limit" | "hang"
    remaining: int
    paths: frozenset[str]
    status: int = 503
    retry_after: int = 1
    seconds: float = 0.0


@dataclass
class _State:
    seed: int
    products: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expires_at
    budget: MemoryRequestWindow = field(default_factory=MemoryRequestWindow)  # rolling hour
    tokens_issued: int = 0
    token_requests_rejected: int = 0
    requests_by_path: Counter[str] = field(default_factory=Counter)
    faults: list[_Fault] = field(default_factory=list)

    def seed_data(self, products: int, orders: int) -> None:
        """Regenerate products and orders; the same counts and seed give the same data."""
        rng = random.Random(self.seed)
        self.products = [_product(rng, i) for i in range(1, products + 1)]
        self.orders = [_order(rng, i, self.products) for i in range(1, orders + 1)]

    def take_fault(self, path: str) -> _Fault | None:
        """Consume one pending fault aimed at `path`."""
        for fault in self.faults:
            if path in fault.paths and fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.faults.remove(fault)
                return fault
        return None


def _product(rng: random.Random, pid: int) -> dict[str, Any]:
    category = rng.choice(_CATEGORIES)
    title = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {pid}"
    return {
        "id": pid,
        "title": title,
        "description": f"{title}, a fine item from our {category} range.",
        "price": round(rng.uniform(2, 500), 2),
        "category": category,
        "brand": rng.choice(_BRANDS),
        "stock": rng.randint(0, 150),
        "rating": round(rng.uniform(1, 5), 2),
        "thumbnail": f"https://partner.example/img/{pid}/thumbnail.webp",
    }


def _order(rng: random.Random, oid: int, products: list[dict[str, Any]]) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    total = 0.0
    for _ in range(rng.randint(1, 4)):
        product = rng.choice(products) if products else None
        pid: int = product["id"] if product else rng.randint(1, 1000)
        price: float = product["price"] if product else round(rng.uniform(2, 500), 2)
        quantity = rng.randint(1, 5)
        total += quantity * price
        items.append({"sku": f"SKU-{pid:05d}", "quantity": quantity, "unit_price": price})
    created = _EPOCH + timedelta(minutes=rng.randint(0, 60 * 24 * 180))
    return {
        "id": f"PO-{oid:06d}",
        "status": rng.choice(_ORDER_STATUSES),
        "total": round(total, 2),
        "currency": "USD",
        "customer_email": f"customer{rng.randint(1, 500)}@example.com",
        "items": items,
        "created_at": created.isoformat().replace("+00:00", "Z"),
    }


def _oauth_error(status: int, error: str, description: str, **headers: str) -> JSONResponse:
    body = {"error": error, "error_description": description}
    return JSONResponse(body, status_code=status, headers={**_NO_STORE, **headers})


def _client_credentials(
    request: Request, form: dict[str, str]
) -> tuple[str, str, bool] | JSONResponse:
    """(client_id, client_secret, used_basic) or the RFC 6749 error to answer."""
    header = request.headers.get("Authorization", "")
    in_form = "client_secret" in form
    if header.lower().startswith("basic "):
        if in_form:
            return _oauth_error(400, "invalid_request", "use one client authentication method")
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            raw_id, raw_secret = decoded.split(":", 1)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return _oauth_error(400, "invalid_request", "malformed Basic credentials")
        return unquote_plus(raw_id), unquote_plus(raw_secret), True
    return form.get("client_id", ""), form.get("client_secret", ""), False


def create_partner_app(
    *,
    client_id: str = "partner-client",
    client_secret: str = "partner-secret",
    token_budget: int = 5,
    token_lifetime: int = 3600,
    products: int = 30,
    orders: int = 20,
    seed: int = 42,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Build the sandbox app; its state lives in the app (one process, one event loop)."""
    app = FastAPI(title="Partner sandbox", version="1.0")
    state = _State(seed=seed)
    state.seed_data(products, orders)
    app.state.partner = state

    @app.middleware("http")
    async def count_and_inject_faults(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        state.requests_by_path[path] += 1
        fault = state.take_fault(path)
        if fault is not None and fault.kind == "hang":
            # Sleep, but stop once the caller has given up, as a real server's work would be
            # abandoned; it also lets the sandbox shut down without cancelling handlers.
            until = time.monotonic() + fault.seconds
            while time.monotonic() < until:
                if await request.is_disconnected():
                    return Response(status_code=499)
                await asyncio.sleep(min(0.05, max(0.0, until - time.monotonic())))
        elif fault is not None and fault.kind == "rate_limit":
            return JSONResponse(
                {"error": "rate_limited", "detail": "too many requests"},
                status_code=429,
                headers={"Retry-After": str(fault.retry_after)},
            )
        elif fault is not None:
            return JSONResponse({"error": "injected fault"}, status_code=fault.status)
        return await call_next(request)

    @app.post("/oauth/token")
    async def token(request: Request) -> JSONResponse:
        """RFC 6749 §4.4 client-credentials grant, within the hourly token budget."""
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        creds = _client_credentials(request, form)
        if isinstance(creds, JSONResponse):
            return creds
        given_id, given_secret, used_basic = creds
        id_ok = hmac.compare_digest(given_id.encode(), client_id.encode())
        secret_ok = hmac.compare_digest(given_secret.encode(), client_secret.encode())
        if not (id_ok and secret_ok):
            extra = {"WWW-Authenticate": 'Basic realm="partner"'} if used_basic else {}
            return _oauth_error(401, "invalid_client", "client authentication failed", **extra)
        grant_type = form.get("grant_type")
        if not grant_type:
            return _oauth_error(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "only client_credentials")
        now = clock()
        granted, seconds = state.budget.take("tokens", now=now, limit=token_budget, window=3600)
        if not granted:
            state.token_requests_rejected += 1
            wait = max(1, math.ceil(seconds))
            description = f"at most {token_budget} tokens per hour; retry after {wait} s"
            return _oauth_error(429, "slow_down", description, **{"Retry-After": str(wait)})
        access_token = secrets.token_urlsafe(32)
        state.tokens[access_token] = now + token_lifetime
        state.tokens_issued += 1
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": token_lifetime,
        }
        if form.get("scope"):
            body["scope"] = form["scope"]
        return JSONResponse(body, headers=_NO_STORE)

    @app.get("/products")
    async def list_products(
        limit: int = Query(30, ge=0, le=10_000), skip: int = Query(0, ge=0)
    ) -> dict[str, Any]:
        """DummyJSON-compatible product page (`limit=0`: everything from `skip`)."""
        page = state.products[skip : skip + limit] if limit else state.products[skip:]
        return {"products": page, "total": len(state.products), "skip": skip, "limit": len(page)}

    @app.get("/api/orders")
    async def list_orders(
        request: Request, limit: int = Query(30, ge=0, le=10_000), skip: int = Query(0, ge=0)
    ) -> dict[str, Any]:
        """Orders, for bearers of an unexpired, unrevoked token."""
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise HTTPException(401, "bearer token required", {"WWW-Authenticate": "Bearer"})
        expires_at = state.tokens.get(presented.strip())
        if expires_at is None or expires_at <= clock():
            challenge = 'Bearer error="invalid_token"'
            raise HTTPException(401, "invalid or expired token", {"WWW-Authenticate": challenge})
        page = state.orders[skip : skip + limit] if limit else state.orders[skip:]
        return {"orders": page, "total": len(state.orders), "skip": skip, "limit": len(page)}

    @app.get("/_stats")
    async def stats() -> dict[str, Any]:
        """Counters for tests and demos."""
        now = clock()
        return {
            "tokens_issued": state.tokens_issued,
            "token_requests_rejected": state.token_requests_rejected,
            "requests_by_path": dict(state.requests_by_path),
            "active_tokens": sum(1 for exp in state.tokens.values() if exp > now),
        }

    @app.post("/_seed")
    async def reseed(body: SeedRequest) -> dict[str, int]:
        """Regenerate the data deterministically."""
        state.seed_data(body.products, body.orders)
        state.products.extend(body.bad_products)
        return {"products": len(state.products), "orders": len(state.orders)}

    @app.post("/_faults")
    async def faults(body: FaultsRequest) -> dict[str, Any]:
        """Arm test faults (see the module docstring)."""
        if body.update_product is not None:
            _update_product(state, body.update_product)  # first: a 404/422 arms nothing
        if body.reset:
            state.faults.clear()
        if body.revoke_tokens:
            state.tokens.clear()
        paths = frozenset(body.paths or DEFAULT_FAULT_PATHS)
        if body.hang_seconds and body.hang_next:
            state.faults.append(_Fault("hang", body.hang_next, paths, seconds=body.hang_seconds))
        if body.fail_next:
            state.faults.append(_Fault("fail", body.fail_next, paths, status=body.status))
        if body.rate_limit_next:
            state.faults.append(
                _Fault("rate_limit", body.rate_limit_next, paths, retry_after=body.retry_after)
            )
        return {"pending": [{"kind": f.kind, "remaining": f.remaining} for f in state.faults]}

    return app


def _update_product(state: _State, changes: dict[str, Any]) -> None:
    pid = changes.get("id")
    product = next((p for p in state.products if isinstance(p, dict) and p.get("id") == pid), None)
    if product is None:
        raise HTTPException(404, f"no product {pid!r}")
    unknown = set(changes) - set(product)
    if unknown:
        raise HTTPException(422, f"unknown product fields: {sorted(unknown)}")
    product.update({k: v for k, v in changes.items() if k != "id"})


def run_partner(host: str = "127.0.0.1", port: int = 8100, **options: Any) -> None:
    """Serve the sandbox with uvicorn until interrupted (`mercato partner`).

    `options` are those of `create_partner_app` (token_budget, token_lifetime, ...).
    """
    import uvicorn  # only the runner needs the server; the app itself does not

    uvicorn.run(create_partner_app(**options), host=host, port=port, log_level="info")
