"""The integration jobs against `mercato run`, as a user drives them over real HTTP: the CSV export
through identity and catalog as the `mercato-exporter` machine client, and `--demo`'s syncs."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningPlatform, start_platform, stop_platform

ADMIN_PASSWORD = "Admin-Pass-1234"
HEADER = [
    "Product ID",
    "Product Name",
    "Description",
    "Price",
    "Status",
    "Customer ID",
    "Created Date",
]


def until(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll until `check` answers something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {timeout} s")


def admin_headers(client: httpx.Client) -> dict[str, str]:
    def attempt() -> dict[str, str] | None:
        answer = client.post(
            "/api/v1/auth/login",
            json={"username_or_email": "admin", "password": ADMIN_PASSWORD},
        )
        if answer.status_code != 200:
            return None
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    headers: dict[str, str] = until(attempt, "admin login")
    return headers


def run_job(client: httpx.Client, headers: dict[str, str], job: str) -> dict[str, Any]:
    """Run a job now and wait for its run to end; answers the run."""
    queued = client.post(f"/api/v1/jobs/{job}/run", headers=headers)
    assert queued.status_code == 202, queued.text
    run_id = queued.json()["run_id"]

    def finished() -> dict[str, Any] | None:
        runs = client.get(f"/api/v1/jobs/{job}/runs", headers=headers).json()["items"]
        run = next((r for r in runs if r["id"] == run_id), None)
        return run if run and run["status"] not in ("queued", "running") else None

    run: dict[str, Any] = until(finished, f"the {job} run to end")
    return run


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[RunningPlatform]:
    running = start_platform(
        tmp_path / "data", extra_env={"MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD}
    )
    yield running
    stop_platform(running)


def test_export_job_writes_the_catalog_as_csv_through_the_api(shop: RunningPlatform) -> None:
    with shop.client() as client:
        boss = admin_headers(client)
        made = []
        for i in range(20):
            body: dict[str, Any] = {
                "name": f'Book {i}, "quoted"',
                "description": f"line one\nline two of {i}",
                "price": f"{i}.5",
                "stock": 0 if i % 5 == 0 else i,
                "active": i % 7 != 0,
            }
            if i % 3 == 0:
                body["owner_id"] = "01a20e6b-0000-7000-8000-00000000000" + str(i % 10)
            answer = client.post("/api/v1/products", headers=boss, json=body)
            assert answer.status_code == 201, answer.text
            made.append(answer.json())

        run = run_job(client, boss, "export-products")
        assert run["status"] == "succeeded", run
        files = client.get("/api/v1/exports", headers=boss).json()["items"]
        assert len(files) == 1
        name = files[0]["file_name"]
        assert re.fullmatch(r"products_\d{8}_\d{6}\.csv", name)
        download = client.get(f"/api/v1/exports/{name}", headers=boss)
        assert download.status_code == 200
        rows = list(csv.reader(io.StringIO(download.text)))
        assert rows[0] == HEADER
        assert len(rows) == 21
        for row, product in zip(rows[1:], made, strict=True):  # created_at, id order
            current = client.get(f"/api/v1/products/{product['id']}").json()
            assert row == [
                current["id"],
                current["name"],
                current["description"],
                str(Decimal(current["price"]).quantize(Decimal("0.01"))),
                "Available" if current["status"] == "available" else "Unavailable",
                current["owner_id"] or "",
                row[6],
            ]
            assert row[6].endswith("Z") and row[6][:19] == current["created_at"][:19]

        # The exporter's token is cached: a second run asks identity for none.
        assert run_job(client, boss, "export-products")["status"] == "succeeded"
        status = client.get("/api/v1/integration/token/status", headers=boss).json()
        assert status["identity"]["requests_last_hour"] == 1
        assert status["identity"]["has_token"] is True
        assert "access_token" not in json.dumps(status)
        assert len(client.get("/api/v1/exports", headers=boss).json()["items"]) == 2


def test_demo_syncs_the_partner_products_and_picks_up_changes(tmp_path: Path) -> None:
    running = start_platform(
        tmp_path / "data", extra_env={"MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD}, args=("--demo",)
    )
    try:
        with running.client() as client:
            boss = admin_headers(client)

            def partner_total() -> int:
                page = client.get(
                    "/api/v1/products?source=partner&include_inactive=true", headers=boss
                )
                return int(page.json()["total"])

            until(lambda: partner_total() == 30, "the demo's first product sync", timeout=90)
            partner = until(
                lambda: (
                    re.search(
                        r'"url": "(http://127\.0\.0\.1:\d+)"[^\n]*demo partner', running.log()
                    )
                    or re.search(
                        r'demo partner[^\n]*"url": "(http://127\.0\.0\.1:\d+)"', running.log()
                    )
                ),
                "the demo partner's address in the log",
            ).group(1)
            httpx.post(f"{partner}/_faults", json={"update_product": {"id": 4, "price": 4.44}})
            queued = client.post("/api/v1/sync/trigger", headers=boss)
            assert queued.status_code == 202

            def synced() -> dict[str, Any] | None:
                runs = client.get("/api/v1/sync/status", headers=boss).json()["runs"]
                run = next((r for r in runs if r["id"] == queued.json()["run_id"]), None)
                return run if run and run["status"] == "succeeded" else None

            run = until(synced, "the triggered sync")
            assert (run["created"], run["updated"]) == (0, 1)

            def repriced() -> bool:
                items = client.get("/api/v1/products?source=partner&limit=100").json()["items"]
                return any(p["external_id"] == "4" and p["price"] == "4.44" for p in items)

            until(repriced, "the partner's new price in the catalog")
            assert partner_total() == 30
    finally:
        stop_platform(running)
