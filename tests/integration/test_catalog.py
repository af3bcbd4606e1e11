"""Catalog over HTTP: admin-only writes, listings, the NDJSON export, events, external sync."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from mercato.catalog.contracts import EXPORT_CSV_HEADER
from mercato.platform.events.envelope import Envelope
from mercato.platform.events.tables import outbox
from mercato.platform.ids import new_id_str
from mercato.platform.settings import Settings
from tests.commerce import create_product
from tests.harness import Stack, admin, embedded_settings, eventually, machine, register_user, stack
from tests.integration.partner_server import fault, partner

SERVICES = ["accounts", "identity", "catalog"]


async def product_events(s: Stack) -> list[dict[str, object]]:
    async with s.platform.databases["catalog"].read() as conn:
        rows = await conn.execute(
            select(outbox.c.envelope)
            .where(outbox.c.event_type.like("product.%"))
            .order_by(outbox.c.seq)
        )
        return [json.loads(raw) for (raw,) in rows]


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
        reader = await machine(s, ["catalog.read"])
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
        for headers in (boss.headers, await machine(s, ["catalog.read"], "reader2")):
            answer = await s.client.get("/api/v1/products/export", headers=headers)
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("application/x-ndjson")
            # The count comes first, so a reader such as the export job can show progress.
            assert answer.headers["x-total-count"] == "520"
            rows = [json.loads(line) for line in answer.text.splitlines()]
            assert [r["name"] for r in rows] == [f"P{i:03d}" for i in range(520)]
            assert rows[7]["active"] is False and rows[7]["status"] == "unavailable"
            keys = [(r["created_at"], r["id"]) for r in rows]
            assert keys == sorted(keys)


HOSTILE = [
    ('=HYPERLINK("http://x","y")', "-5 degrees"),
    ("+1", "@SUM(A1)"),
    ("\tTab", "\rCR"),
    ('Plain, "quoted"', "line one\r\nline two\nthree"),
    ("Dünë — 砂丘", None),
]


async def test_export_as_csv_is_the_jobs_format_with_formulas_neutralised(
    backend: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mercato.catalog import service as catalog_service

    monkeypatch.setattr(catalog_service, "EXPORT_CSV_BATCH", 2)  # several keyset pages
    async with stack(backend, SERVICES) as s:
        boss = await admin(s)
        ctx = s.platform.contexts["catalog"]
        made = []
        for i, (name, description) in enumerate(HOSTILE):
            values = {"name": name, "description": description, "price": f"{i}.0{i}"}
            made.append(await catalog_service.create_product(ctx.uow, values | {"stock": i}))
        url = "/api/v1/products/export"
        csv_accept = {"Accept": "text/csv", **boss.headers}
        answer = await s.client.get(url, headers=csv_accept)
        assert answer.status_code == 200 and answer.headers["x-total-count"] == "5"
        assert answer.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(answer.text, newline="")))
        assert rows[0] == list(EXPORT_CSV_HEADER)
        assert [r[0] for r in rows[1:]] == [p.id for p in made]
        assert [(r[1], r[2]) for r in rows[1:]] == [
            ('\'=HYPERLINK("http://x","y")', "'-5 degrees"),
            ("'+1", "'@SUM(A1)"),
            ("'\tTab", "'\rCR"),
            ('Plain, "quoted"', "line one\r\nline two\nthree"),
            ("Dünë — 砂丘", ""),
        ]
        assert [r[3] for r in rows[1:]] == ["0.00", "1.01", "2.02", "3.03", "4.04"]
        assert [r[4] for r in rows[1:]] == ["Unavailable"] + ["Available"] * 4
        assert {r[5] for r in rows[1:]} == {""}
        assert rows[1][6] == made[0].created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        monkeypatch.setattr(catalog_service, "EXPORT_CSV_BATCH", 10)  # one page, the last
        assert (await s.client.get(url, headers=csv_accept)).content == answer.content
        raw = await s.client.get(f"{url}?neutralise_formulas=false", headers=csv_accept)
        raw_rows = list(csv.reader(io.StringIO(raw.text, newline="")))
        assert [(r[1], r[2] or None) for r in raw_rows[1:]] == HOSTILE
        # NDJSON stays the default and wins a tie; CSV only when preferred.
        for accept, media in [
            ("*/*", "application/x-ndjson"),
            ("text/csv;q=0.5, */*", "application/x-ndjson"),
            ("text/csv, application/x-ndjson;q=0.5", "text/csv"),
        ]:
            got = await s.client.get(url, headers={"Accept": accept, **boss.headers})
            assert got.headers["content-type"].startswith(media), accept


async def test_partner_products_sync_into_the_catalog_by_source_and_external_id(
    backend: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with partner() as base:
        monkeypatch.setenv("MERCATO_EXTERNAL_BASE_URL", base)
        monkeypatch.setenv("MERCATO_EXTERNAL_CLIENT_ID", "partner-client")
        monkeypatch.setenv("MERCATO_EXTERNAL_CLIENT_SECRET", "partner-secret")
        monkeypatch.setenv("MERCATO_JOB_SYNC_EXTERNAL_PRODUCTS_INITIAL_DELAY", "3600")
        async with stack(backend) as s:
            boss = await admin(s)

            async def sync_once() -> dict[str, object]:
                queued = await s.client.post("/api/v1/sync/trigger", headers=boss.headers)
                assert queued.status_code == 202, queued.text
                run_id = queued.json()["run_id"]
                found: dict[str, object] = {}

                async def finished() -> bool:
                    status = await s.client.get("/api/v1/sync/status", headers=boss.headers)
                    runs = {r["id"]: r for r in status.json()["runs"]}
                    found.update(runs.get(run_id) or {})
                    return found.get("status") in ("succeeded", "failed")

                await eventually(finished, what="the sync run to finish")
                assert found["status"] == "succeeded", found
                return found

            async def partner_products() -> list[dict[str, object]]:
                page = await s.client.get(
                    "/api/v1/products?source=partner&limit=500&include_inactive=true",
                    headers=boss.headers,
                )
                return list(page.json()["items"])

            first = await sync_once()
            assert (first["created"], first["failed"]) == (30, 0)

            async def all_there() -> bool:
                return len(await partner_products()) == 30

            await eventually(all_there, what="30 partner products in the catalog")
            before = {p["external_id"]: p for p in await partner_products()}
            assert all(p["source"] == "partner" for p in before.values())

            second = await sync_once()
            assert (second["created"], second["updated"], second["unchanged"]) == (0, 0, 30)

            # An admin withdraws one; a change at the partner updates it but keeps it withdrawn.
            three = before["3"]
            withdrawn = await s.client.patch(
                f"/api/v1/products/{three['id']}", headers=boss.headers, json={"active": False}
            )
            assert withdrawn.status_code == 200
            await fault(base, update_product={"id": 3, "price": 9.99})
            third = await sync_once()
            assert (third["created"], third["updated"]) == (0, 1)

            async def repriced() -> bool:
                product = (await s.client.get(f"/api/v1/products/{three['id']}")).json()
                return bool(product["price"] == "9.99")

            await eventually(repriced, what="the partner's new price in the catalog")
            product = (await s.client.get(f"/api/v1/products/{three['id']}")).json()
            assert product["active"] is False
            after = {p["external_id"]: p for p in await partner_products()}
            assert len(after) == 30
            assert {k: v["updated_at"] for k, v in after.items() if k != "3"} == {
                k: v["updated_at"] for k, v in before.items() if k != "3"
            }

            # An old announcement delivered again (a redelivery) never puts the old price back.
            async with s.platform.databases["integration"].read() as conn:
                rows = await conn.execute(
                    select(outbox.c.envelope).where(
                        outbox.c.event_type == "external_product.synced",
                        outbox.c.subject == "partner:3",
                    )
                )
                oldest = Envelope.from_json(rows.scalars().first() or "")
            stale = oldest.model_copy(update={"id": new_id_str()})
            await s.platform.redeliver("catalog", stale)
            await asyncio.sleep(0.5)
            product = (await s.client.get(f"/api/v1/products/{three['id']}")).json()
            assert product["price"] == "9.99"
