"""Catalog over HTTP: admin-only writes, listings, the NDJSON export, events, external sync."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from mercato.platform.auth import issue_access_token
from mercato.platform.events.tables import outbox
from mercato.platform.settings import Settings
from tests.commerce import create_product
from tests.harness import _TEST_KEY, Stack, admin, embedded_settings, register_user, stack

SERVICES = ["accounts", "catalog"]


async def product_events(s: Stack) -> list[dict[str, object]]:
    async with s.platform.databases["catalog"].read() as conn:
        rows = await conn.execute(
            select(outbox.c.envelope)
            .where(outbox.c.event_type.like("product.%"))
            .order_by(outbox.c.seq)
        )
        return [json.loads(raw) for (raw,) in rows]


def machine_headers(s: Stack, scopes: list[str]) -> dict[str, str]:
    """A client-credentials token (no `roles` claim), signed by the harness's test key."""
    token, _ = issue_access_token(
        _TEST_KEY,
        issuer=s.settings.issuer,
        audience=s.settings.audience,
        subject="exporter",
        client_id="mercato-exporter",
        scopes=scopes,
        roles=None,
        lifetime_seconds=300,
    )
    return {"Authorization": f"Bearer {token}"}


async def test_admin_crud_with_versioned_events(backend: Settings) -> None:
    async with stack(backend, SERVICES) as s:
        boss = await admin(s)
        jane = await register_user(s, "jane")
        body = {"name": "Dune", "price": "9.99", "stock": 2, "author": "Herbert", "category": "SF"}
        assert (await s.client.post("/api/v1/products", json=body)).status_code == 401
        assert (
            await s.client.post("/api/v1/products", headers=jane.headers, json=body)
        ).status_code == 403
        created = await s.client.post("/api/v1/products", headers=boss.headers, json=body)
        assert created.status_code == 201
        book = created.json()
        assert book | {"id": book["id"]} == {
            **book,
            "price": "9.99",
            "currency": "USD",
            "status": "available",
            "source": "local",
            "external_id": None,
        }
        url = f"/api/v1/products/{book['id']}"
        patched = await s.client.patch(url, headers=boss.headers, json={"active": False})
        assert patched.json()["status"] == "unavailable" and patched.json()["stock"] == 2
        same = await s.client.patch(url, headers=boss.headers, json={"active": False})
        assert same.status_code == 200  # no change: no new version, no event
        put = await s.client.put(url, headers=boss.headers, json={"name": "Dune", "price": 12})
        assert put.json() | {"updated_at": None} == {
            **put.json(),
            "updated_at": None,
            "price": "12.00",
            "stock": 0,
            "author": None,
            "active": True,
        }
        assert (await s.client.delete(url, headers=jane.headers)).status_code == 403
        assert (await s.client.delete(url, headers=boss.headers)).status_code == 204
        assert (await s.client.get(url)).status_code == 404
        assert (await s.client.delete(url, headers=boss.headers)).status_code == 404
        events = await product_events(s)
        assert [(e["type"], e["data"]["version"]) for e in events] == [
            ("product.upserted", 1),
            ("product.upserted", 2),
            ("product.upserted", 3),
            ("product.deleted", 4),
        ]


async def test_listing_filters_sorts_and_pages(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir), SERVICES) as s:
        boss = await admin(s)
        await create_product(s, boss, name="Dune", category="SF", stock=3, author="Herbert")
        await create_product(s, boss, name="Emma", category="Classic", stock=0)
        await create_product(s, boss, name="100% Pure_Fun", category="sf", stock=1)
        hidden = await create_product(s, boss, name="Hidden", stock=5, active=False)

        async def names(query: str, **kw: object) -> list[str]:
            answer = await s.client.get(f"/api/v1/products{query}", **kw)  # type: ignore[arg-type]
            assert answer.status_code == 200, answer.text
            return [p["name"] for p in answer.json()["items"]]

        assert await names("") == ["Dune", "Emma", "100% Pure_Fun"]
        assert await names("?sort=-created_at") == ["100% Pure_Fun", "Emma", "Dune"]
        assert await names("?category=SF") == ["Dune", "100% Pure_Fun"]
        assert await names("?available=true") == ["Dune", "100% Pure_Fun"]
        assert await names("?available=false") == ["Emma"]
        assert await names("?q=herb") == ["Dune"]
        assert await names("?q=%25") == ["100% Pure_Fun"]  # LIKE wildcards are literal
        assert await names("?q=dun_") == []  # `_` would match "Dune"
        assert await names("?source=partner") == []
        page = (await s.client.get("/api/v1/products?skip=1&limit=1")).json()
        assert (page["total"], page["skip"], page["limit"]) == (3, 1, 1)
        assert [p["name"] for p in page["items"]] == ["Emma"]
        assert (await s.client.get("/api/v1/products?limit=501")).status_code == 422
        assert (await s.client.get("/api/v1/products?include_inactive=true")).status_code == 401
        jane = await register_user(s, "jane")
        denied = await s.client.get("/api/v1/products?include_inactive=true", headers=jane.headers)
        assert denied.status_code == 403
        everything = await names("?include_inactive=true", headers=boss.headers)
        assert "Hidden" in everything and len(everything) == 4
        reader = machine_headers(s, ["catalog.read"])
        assert "Hidden" in await names("?include_inactive=true", headers=reader)
        assert (await s.client.get(f"/api/v1/products/{hidden['id']}")).json()["active"] is False


async def test_export_streams_every_product_as_ndjson_in_creation_order(backend: Settings) -> None:
    async with stack(backend, SERVICES) as s:
        boss = await admin(s)
        from mercato.catalog import service as catalog_service

        # More than one keyset page (500), one of them withdrawn.
        ctx = s.platform.contexts["catalog"]
        for i in range(520):
            await catalog_service.create_product(
                ctx.uow, {"name": f"P{i:03d}", "price": 1, "stock": i % 3, "active": i != 7}
            )
        assert (await s.client.get("/api/v1/products/export")).status_code == 401
        jane = await register_user(s, "jane")
        assert (
            await s.client.get("/api/v1/products/export", headers=jane.headers)
        ).status_code == 403
        for headers in (boss.headers, machine_headers(s, ["catalog.read"])):
            answer = await s.client.get("/api/v1/products/export", headers=headers)
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("application/x-ndjson")
            rows = [json.loads(line) for line in answer.text.splitlines()]
            assert [r["name"] for r in rows] == [f"P{i:03d}" for i in range(520)]
            assert rows[7]["active"] is False and rows[7]["status"] == "unavailable"
            keys = [(r["created_at"], r["id"]) for r in rows]
            assert keys == sorted(keys)


async def test_external_sync_runs_upsert_by_source_and_external_id(backend: Settings) -> None:
    async with stack(backend, SERVICES) as s:
        boss = await admin(s)
        syncer = machine_headers(s, ["catalog.sync"])
        queued = await s.client.post("/api/v1/sync/trigger", headers=boss.headers)
        assert queued.status_code == 202
        run_id = queued.json()["run_id"]
        again = await s.client.post("/api/v1/sync/trigger", headers=boss.headers)
        assert again.json()["run_id"] == run_id  # one queued run at a time
        assert (
            await s.client.post("/api/v1/sync/runs/claim", headers=boss.headers, json={})
        ).status_code == 422
        claimed = await s.client.post(
            "/api/v1/sync/runs/claim", headers=syncer, json={"source": "partner"}
        )
        assert claimed.status_code == 200 and claimed.json()["id"] == run_id
        assert claimed.json()["status"] == "running"
        none_left = await s.client.post(
            "/api/v1/sync/runs/claim", headers=syncer, json={"source": "partner"}
        )
        assert none_left.status_code == 204
        page = [
            {"external_id": "1", "name": "Phone", "price": 99.5, "stock": 3, "category": "tech"},
            {"external_id": "2", "name": "Lamp", "price": "10", "author": "Ikea"},
            {"external_id": "3", "name": "Bad", "price": "1.234"},
            {"name": "No id", "price": 1},
        ]
        url = f"/api/v1/sync/runs/{run_id}/products"
        first = await s.client.post(url, headers=syncer, json={"products": page})
        assert first.status_code == 200, first.text
        assert first.json() | {"errors": []} == {
            "run_id": run_id,
            "created": 2,
            "updated": 0,
            "unchanged": 0,
            "failed": 2,
            "errors": [],
        }
        assert [e["index"] for e in first.json()["errors"]] == [2, 3]
        page[0]["price"] = 89
        second = (await s.client.post(url, headers=syncer, json={"products": page[:2]})).json()
        assert (second["created"], second["updated"], second["unchanged"]) == (0, 1, 1)
        done = await s.client.post(
            f"/api/v1/sync/runs/{run_id}/finish",
            headers=syncer,
            json={"status": "succeeded", "next_run_at": "2030-01-01T00:00:00Z"},
        )
        assert done.json()["status"] == "succeeded"
        assert (await s.client.post(url, headers=syncer, json={"products": []})).status_code == 409
        status = (await s.client.get("/api/v1/sync/status", headers=boss.headers)).json()
        [run] = status["runs"]
        assert (run["created"], run["updated"], run["unchanged"], run["failed"]) == (2, 1, 1, 2)
        assert status["next_run_at"].startswith("2030-01-01")
        listed = (await s.client.get("/api/v1/products?source=partner")).json()["items"]
        assert {(p["external_id"], p["price"]) for p in listed} == {("1", "89.00"), ("2", "10.00")}
        jane = await register_user(s, "jane")
        assert (await s.client.get("/api/v1/sync/status", headers=jane.headers)).status_code == 403
