"""Who may call every admin endpoint: anonymous 401, user 403, admin allowed, machine token 403
without `mercato.admin` and allowed with it.

Data-driven: add a row for each admin endpoint a service gains (and its service to SERVICES).
`{user_id}` and `{client_id}` in a path or body are filled in from the stack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Stack, admin, embedded_settings, register_user, stack

SERVICES = None  # every service

# (method, path, JSON body or None)
ADMIN_ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/v1/admin/accounts", None),
    ("PUT", "/api/v1/admin/accounts/{user_id}/roles", {"roles": ["user"]}),
    ("PUT", "/api/v1/admin/accounts/{user_id}/status", {"status": "active"}),
    ("GET", "/api/v1/admin/clients", None),
    ("POST", "/api/v1/admin/clients", {"name": "made by rbac test", "scopes": ["x.read"]}),
    ("DELETE", "/api/v1/admin/clients/{client_id}", None),
    ("POST", "/api/v1/admin/keys/rotate", None),
    ("GET", "/api/v1/events/accounts/dead-letters", None),
    ("GET", "/api/v1/events/identity/dead-letters", None),
    ("GET", "/api/v1/events/accounts/stats", None),
    ("GET", "/api/v1/events/identity/stats", None),
    ("POST", "/api/v1/events/identity/dead-letters/{client_id}/replay", None),
    # catalog
    ("POST", "/api/v1/products", {"name": "Book", "price": "9.99", "stock": 1}),
    ("PUT", "/api/v1/products/{missing_id}", {"name": "Book", "price": "9.99"}),
    ("PATCH", "/api/v1/products/{missing_id}", {"active": False}),
    ("DELETE", "/api/v1/products/{missing_id}", None),
    # orders
    ("GET", "/api/v1/admin/orders", None),
    # integration
    ("GET", "/api/v1/integration/token/status", None),
    ("DELETE", "/api/v1/integration/token", None),
    ("GET", "/api/v1/jobs", None),
    ("POST", "/api/v1/jobs/export-products/run", None),
    ("GET", "/api/v1/jobs/export-products/runs", None),
    ("GET", "/api/v1/exports", None),
    ("GET", "/api/v1/exports/products_20260101_000000.csv", None),
    ("GET", "/api/v1/external-orders", None),
    ("POST", "/api/v1/sync/trigger", None),
    ("GET", "/api/v1/sync/status", None),
    # the backbone of every other service
    *[
        ("GET", f"/api/v1/events/{service}/{what}", None)
        for service in ("catalog", "wallet", "orders", "integration")
        for what in ("dead-letters", "stats")
    ],
]


@dataclass
class Callers:
    """The five kinds of caller and the ids the rows refer to."""

    headers: dict[str, dict[str, str]]
    values: dict[str, str]


async def machine_token(s: Stack, boss: dict[str, str], client_id: str, scope: str) -> str:
    made = await s.client.post(
        "/api/v1/admin/clients",
        headers=boss,
        json={"client_id": client_id, "name": client_id, "scopes": [scope]},
    )
    assert made.status_code == 201, made.text
    token = await s.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, made.json()["client_secret"]),
    )
    assert token.status_code == 200, token.text
    return str(token.json()["access_token"])


@pytest.fixture
async def env(data_dir: Path) -> AsyncIterator[tuple[Stack, Callers]]:
    async with stack(embedded_settings(data_dir), SERVICES) as s:
        boss = await admin(s)
        jane = await register_user(s, "jane")
        reader = await machine_token(s, boss.headers, "reader", "catalog.read")
        operator = await machine_token(s, boss.headers, "operator", "mercato.admin")
        callers = Callers(
            headers={
                "anonymous": {},
                "user": jane.headers,
                "admin": boss.headers,
                "machine": {"Authorization": f"Bearer {reader}"},
                "machine with mercato.admin": {"Authorization": f"Bearer {operator}"},
            },
            values={
                "user_id": jane.id,
                "client_id": "no-such-client",
                "missing_id": "01a20e6b-0000-7000-8000-000000000000",
            },
        )
        yield s, callers


EXPECTED = {
    "anonymous": 401,
    "user": 403,
    "admin": None,  # allowed: anything but 401/403
    "machine": 403,
    "machine with mercato.admin": None,
}


def fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    return value


@pytest.mark.parametrize(
    ("method", "path", "body"), ADMIN_ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ADMIN_ENDPOINTS]
)
async def test_admin_endpoint_access(
    env: tuple[Stack, Callers], method: str, path: str, body: dict[str, Any] | None
) -> None:
    s, callers = env
    for who, expected in EXPECTED.items():
        answer = await s.client.request(
            method,
            fill(path, callers.values),
            headers=callers.headers[who],
            json=fill(body, callers.values),
        )
        if expected is None:
            assert answer.status_code not in (401, 403), f"{who}: {answer.status_code}"
            assert answer.status_code < 500, f"{who}: {answer.text}"
        else:
            assert answer.status_code == expected, f"{who}: {answer.status_code} {answer.text}"
            assert answer.headers["content-type"] == "application/problem+json"
