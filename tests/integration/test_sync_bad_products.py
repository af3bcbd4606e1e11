"""One bad partner product does not abort the product sync (issue 11 item 13), SQLite and PG.

The partner sandbox serves good products and, after them, raw bad ones (a `"NaN"` price, a
price of 1e20, no title, a huge stock, not an object); the sync over the real API counts each
bad one as failed with its reason, imports the rest, and `GET /api/v1/sync/status` says why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mercato.platform.events.tables import outbox
from tests.harness import caller_token, embedded_settings, eventually, stack
from tests.integration.partner_server import partner

BAD: list[Any] = [
    {"id": 101, "title": "Price NaN", "price": "NaN"},
    {"id": 102, "title": "Price huge", "price": 1e20},
    {"id": 103, "price": 4.5},  # no title
    {"id": 104, "title": "Stock huge", "price": 3, "stock": 1e30},
    "not an object",
]


async def test_bad_products_fail_alone_and_the_rest_is_imported(
    database_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with partner() as base:
        async with httpx.AsyncClient(base_url=base) as raw:
            seeded = await raw.post("/_seed", json={"products": 6, "bad_products": BAD})
            assert seeded.json()["products"] == 11
        monkeypatch.setenv("MERCATO_EXTERNAL_BASE_URL", base)
        monkeypatch.setenv("MERCATO_EXTERNAL_PAGE_SIZE", "4")  # bad ones share pages with good
        settings = embedded_settings(data_dir, database_url=database_url)
        async with stack(settings, ["integration"]) as s:
            token = await caller_token(s, "root", "", sub="admin-1", roles=["admin"])
            headers = {"Authorization": f"Bearer {token}"}
            assert (await s.client.post("/api/v1/sync/trigger", headers=headers)).status_code == 202

            async def finished() -> bool:
                runs = (await s.client.get("/api/v1/sync/status", headers=headers)).json()["runs"]
                return bool(runs) and runs[0]["status"] not in ("queued", "running")

            await eventually(finished, what="the sync run finished")
            answer = await s.client.get("/api/v1/sync/status", headers=headers)
            run = answer.json()["runs"][0]
            assert run["status"] == "succeeded", run
            assert (run["created"], run["updated"], run["unchanged"], run["failed"]) == (6, 0, 0, 5)
            error = run["error"]
            assert error.startswith("5 products failed")
            for said in ("'101'", "NaN", "'102'", "1e+20", "'103'", "missing title", "'104'"):
                assert said in error, (said, error)
            assert "no id: not a JSON object" in error
            async with s.platform.databases["integration"].read() as conn:
                rows = (
                    await conn.execute(
                        select(outbox.c.envelope).where(
                            outbox.c.event_type == "external_product.synced"
                        )
                    )
                ).all()
            synced = sorted(int(json.loads(r.envelope)["data"]["external_id"]) for r in rows)
            assert synced == [1, 2, 3, 4, 5, 6]  # every good one, and no bad one
