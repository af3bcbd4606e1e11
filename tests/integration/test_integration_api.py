"""The integration HTTP API on a running platform (SQLite and PostgreSQL): who may call, what bad
input answers, and a manual export and order sync driven end to end through the endpoints."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mercato.app import build_platform
from mercato.platform.auth import generate_signing_key, issue_access_token, jwks
from mercato.platform.settings import Settings
from tests.integration.partner_server import fault, partner, serving
from tests.integration.test_integration_export import SECRET, Contract, contract_app

ISSUER = "https://id.mercato.test"
KEY = generate_signing_key()


def token(roles: list[str] | None, scopes: tuple[str, ...] = ()) -> dict[str, str]:
    value, _ = issue_access_token(
        KEY,
        issuer=ISSUER,
        audience="mercato",
        subject="someone",
        client_id="web" if roles is not None else "robot",
        scopes=scopes,
        roles=roles,
        lifetime_seconds=600,
    )
    return {"Authorization": f"Bearer {value}"}


ADMIN = token(["user", "admin"])
USER = token(["user"])
MACHINE_ADMIN = token(None, ("mercato.admin",))
READER = token(None, ("catalog.read",))

ENDPOINTS = [
    ("GET", "/api/v1/integration/token/status"),
    ("DELETE", "/api/v1/integration/token"),
    ("GET", "/api/v1/jobs"),
    ("POST", "/api/v1/jobs/sync-external-orders/run"),
    ("GET", "/api/v1/jobs/sync-external-orders/runs"),
    ("GET", "/api/v1/exports"),
    ("GET", "/api/v1/exports/products_20260101_000000.csv"),
    ("GET", "/api/v1/external-orders"),
    ("POST", "/api/v1/sync/trigger"),
    ("GET", "/api/v1/sync/status"),
]


@pytest.fixture
async def api(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, str, Contract]]:
    """A platform with the integration service, pointed at a partner and a contract stand-in."""
    state = Contract(products=40)
    async with partner() as partner_url, serving(contract_app(state)) as platform_url:
        for key, value in {
            "MERCATO_INTEGRATION_DATABASE_URL": database_url,
            "MERCATO_PUBLIC_URL": platform_url,
            "MERCATO_EXPORTER_CLIENT_SECRET": SECRET,
            "MERCATO_EXTERNAL_BASE_URL": partner_url,
            "MERCATO_EXTERNAL_CLIENT_ID": "partner-client",
            "MERCATO_EXTERNAL_CLIENT_SECRET": "partner-secret",
            "MERCATO_JOB_EXPORT_PRODUCTS_INITIAL_DELAY": "3600",
            "MERCATO_JOB_SYNC_EXTERNAL_PRODUCTS_INITIAL_DELAY": "3600",
            "MERCATO_JOB_SYNC_EXTERNAL_ORDERS_INITIAL_DELAY": "3600",
            "MERCATO_SCHEDULER_POLL_SECONDS": "0.2",
        }.items():
            monkeypatch.setenv(key, value)
        settings = Settings(data_dir=tmp_path / "data", issuer=ISSUER, audience="mercato")
        platform = build_platform(settings, ["integration"])
        platform.shared.local_jwks = lambda: jwks([KEY])
        app = platform.create_app()
        await platform.start()
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://mercato") as client:
                yield client, partner_url, state
        finally:
            await platform.stop()


async def wait_run(client: httpx.AsyncClient, job: str, run_id: str) -> dict[str, Any]:
    for _ in range(300):
        runs = (await client.get(f"/api/v1/jobs/{job}/runs", headers=ADMIN)).json()["items"]
        run = next((r for r in runs if r["id"] == run_id), None)
        if run is not None and run["status"] in ("succeeded", "failed"):
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} of {job} did not finish")


async def test_every_endpoint_is_admin_only(
    api: tuple[httpx.AsyncClient, str, Contract],
) -> None:
    client, _, _ = api
    for method, path in ENDPOINTS:
        for headers, status in ((None, 401), (USER, 403), (READER, 403)):
            answer = await client.request(method, path, headers=headers)
            assert answer.status_code == status, (method, path, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["status"] == status
        for headers in (ADMIN, MACHINE_ADMIN):
            answer = await client.request(method, path, headers=headers)
            assert answer.status_code in (200, 202, 204, 404), (method, path, answer.text)


BAD_INPUT = [
    ("POST", "/api/v1/jobs/no-such-job/run", 404),
    ("POST", "/api/v1/jobs/Bad%20Name!/run", 422),
    ("GET", "/api/v1/jobs/no-such-job/runs", 404),
    ("GET", "/api/v1/jobs/export-products/runs?limit=0", 422),
    ("GET", "/api/v1/jobs/export-products/runs?limit=501", 422),
    ("GET", "/api/v1/jobs/export-products/runs?skip=-1", 422),
    ("GET", "/api/v1/jobs?limit=abc", 422),
    ("GET", "/api/v1/exports/..%2F..%2Fintegration.db", 404),
    ("GET", "/api/v1/exports/..%2F..%2F..%2Fetc%2Fpasswd", 404),
    ("GET", "/api/v1/exports/%2Fetc%2Fpasswd", 404),
    ("GET", "/api/v1/exports/.products_20260101_000000.csv.part", 404),
    ("GET", "/api/v1/exports/products_20260101_000000.csv", 404),
    ("GET", "/api/v1/exports/" + "a" * 300 + ".csv", 422),
    ("GET", "/api/v1/exports/%00.csv", 404),
    ("DELETE", "/api/v1/integration/token?upstream=nobody", 404),
    ("GET", "/api/v1/external-orders?limit=-5", 422),
    ("GET", "/api/v1/sync/status?limit=0", 422),
]


async def test_bad_input_answers_problem_json(
    api: tuple[httpx.AsyncClient, str, Contract],
) -> None:
    client, _, _ = api
    for method, path, status in BAD_INPUT:
        answer = await client.request(method, path, headers=ADMIN)
        assert answer.status_code == status, (path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == status


async def test_export_run_list_and_download_through_the_api(
    api: tuple[httpx.AsyncClient, str, Contract],
) -> None:
    client, _, _ = api
    jobs = (await client.get("/api/v1/jobs", headers=ADMIN)).json()
    assert {j["name"]: j["enabled"] for j in jobs["items"]} == {
        "export-products": True,
        "sync-external-products": True,
        "sync-external-orders": True,
    }
    answer = await client.post("/api/v1/jobs/export-products/run", headers=ADMIN)
    assert answer.status_code == 202
    run = await wait_run(client, "export-products", answer.json()["run_id"])
    assert run["status"] == "succeeded", run["error"]
    assert run["trigger"] == "manual" and run["counts"]["rows"] == 40
    exports = (await client.get("/api/v1/exports", headers=ADMIN)).json()
    assert exports["total"] == 1
    item = exports["items"][0]
    assert item["file_name"] == run["output"] and item["rows"] == 40
    download = await client.get(item["download_url"], headers=ADMIN)
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(download.text, newline="")))
    assert rows[0][0] == "Product ID" and len(rows) == 41
    jobs = (await client.get("/api/v1/jobs", headers=ADMIN)).json()["items"]
    export = next(j for j in jobs if j["name"] == "export-products")
    assert export["last_run"]["id"] == run["id"] and export["schedule"] == "every 300s"
    status = (await client.get("/api/v1/integration/token/status", headers=ADMIN)).json()
    assert status["identity"]["has_token"] is True
    assert status["identity"]["requests_last_hour"] == 1
    assert SECRET not in str(status)


async def test_order_sync_tokens_and_sync_endpoints(
    api: tuple[httpx.AsyncClient, str, Contract],
) -> None:
    client, _, _ = api
    answer = await client.post("/api/v1/jobs/sync-external-orders/run", headers=ADMIN)
    run = await wait_run(client, "sync-external-orders", answer.json()["run_id"])
    assert run["status"] == "succeeded" and run["counts"]["created"] == 20
    orders = (await client.get("/api/v1/external-orders?limit=5", headers=ADMIN)).json()
    assert orders["total"] == 20 and len(orders["items"]) == 5
    first = orders["items"][0]
    assert first["source"] == "partner" and isinstance(first["total"], str)
    status = (await client.get("/api/v1/integration/token/status", headers=ADMIN)).json()
    partner_status = status["partner"]
    assert partner_status["has_token"] and partner_status["budget_per_hour"] == 5
    assert set(partner_status) == {
        "has_token",
        "expires_at",
        "renew_at",
        "requests_last_hour",
        "budget_per_hour",
        "last_error",
        "circuit_state",
    }
    forget = await client.delete("/api/v1/integration/token?upstream=partner", headers=ADMIN)
    assert forget.status_code == 204
    status = (await client.get("/api/v1/integration/token/status", headers=ADMIN)).json()
    assert status["partner"]["has_token"] is False
    trigger = await client.post("/api/v1/sync/trigger", headers=ADMIN)
    assert trigger.status_code == 202
    run = await wait_run(client, "sync-external-products", trigger.json()["run_id"])
    assert run["status"] == "succeeded"
    sync = (await client.get("/api/v1/sync/status", headers=ADMIN)).json()
    assert sync["runs"][0]["id"] == run["id"]
    assert sync["runs"][0]["created"] == 30 and sync["runs"][0]["unchanged"] == 0
    assert sync["next_run_at"] is not None


async def test_the_token_status_shows_each_upstreams_circuit(
    api: tuple[httpx.AsyncClient, str, Contract],
) -> None:
    client, partner_url, _ = api

    async def circuits() -> dict[str, Any]:
        status = (await client.get("/api/v1/integration/token/status", headers=ADMIN)).json()
        return {name: st["circuit_state"] for name, st in status.items()}

    assert await circuits() == {"partner": "closed", "identity": "closed"}
    # The partner fails every call: its breaker opens after a few failed runs, identity's not.
    await fault(partner_url, fail_next=1000, status=503)
    for _ in range(10):
        answer = await client.post("/api/v1/jobs/sync-external-orders/run", headers=ADMIN)
        run = await wait_run(client, "sync-external-orders", answer.json()["run_id"])
        assert run["status"] == "failed"
        if (await circuits())["partner"] == "open":
            break
    assert await circuits() == {"partner": "open", "identity": "closed"}
