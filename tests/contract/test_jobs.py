"""The integration jobs over HTTP, on both targets (each runs a partner sandbox): the job list,
the CSV export of the catalog and its download, the partner's products and orders synced in,
the token status that never shows a token, the product sync's trigger and status, and that
only admins may touch any of it."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal
from typing import Any

import httpx

from tests.contract.api import admin, is_problem, newcomer, product, unique, until
from tests.contract.conftest import Target

JOBS = ("export-products", "sync-external-products", "sync-external-orders")
HEADER = [
    "Product ID",
    "Product Name",
    "Description",
    "Price",
    "Status",
    "Customer ID",
    "Created Date",
]
TOKEN_FIELDS = {
    "has_token",
    "expires_at",
    "renew_at",
    "requests_last_hour",
    "budget_per_hour",
    "last_error",
    "circuit_state",
}
# What a bearer token could look like: a JWT, or a long opaque urlsafe string.
TOKENISH = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*|^[\w-]{32,}$")


def run_job(client: httpx.Client, boss: dict[str, str], job: str) -> dict[str, Any]:
    """Run a job now and wait for the run to end; the run as its history shows it."""
    queued = client.post(f"/api/v1/jobs/{job}/run", headers=boss)
    assert queued.status_code == 202, queued.text
    run_id = queued.json()["run_id"]
    return ended(client, boss, job, run_id)


def ended(client: httpx.Client, boss: dict[str, str], job: str, run_id: str) -> dict[str, Any]:
    """Wait for run `run_id` of `job` to end; the run."""

    def finished() -> dict[str, Any] | None:
        answer = client.get(f"/api/v1/jobs/{job}/runs", headers=boss, params={"limit": 500})
        assert answer.status_code == 200, answer.text
        run = next((r for r in answer.json()["items"] if r["id"] == run_id), None)
        return run if run and run["status"] not in ("queued", "running") else None

    return until(finished, f"the {job} run {run_id} to end", timeout=120)


def partner_products(client: httpx.Client, boss: dict[str, str]) -> list[dict[str, Any]]:
    """Every product the partner sync brought in, withdrawn ones too."""
    answer = client.get(
        "/api/v1/products",
        params={"source": "partner", "include_inactive": "true", "limit": 500},
        headers=boss,
    )
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def partner_products_once(
    client: httpx.Client, boss: dict[str, str], count: int
) -> list[dict[str, Any]] | None:
    """The partner's products once the catalog holds `count` of them (None before)."""
    found = partner_products(client, boss)
    return found if len(found) == count else None


def run_totals(client: httpx.Client, boss: dict[str, str]) -> dict[str, int]:
    """How many runs each job has recorded."""
    totals: dict[str, int] = {}
    for job in JOBS:
        answer = client.get(f"/api/v1/jobs/{job}/runs", headers=boss)
        assert answer.status_code == 200, answer.text
        totals[job] = int(answer.json()["total"])
    return totals


def strings(value: Any) -> list[str]:
    """Every string (keys and values) inside a JSON value."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_the_three_jobs_are_listed(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        answer = client.get("/api/v1/jobs", headers=boss)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert page["total"] == len(page["items"]) == 3, page
        jobs = {job["name"]: job for job in page["items"]}
        assert set(jobs) == set(JOBS), jobs
        for job in jobs.values():
            assert job["enabled"] is True and job["disabled_reason"] is None, job
            assert job["schedule"] and job["description"], job
            assert "next_run_at" in job and "last_run" in job, job
        is_problem(client.post("/api/v1/jobs/no-such-job/run", headers=boss), 404)
        is_problem(client.get("/api/v1/jobs/no-such-job/runs", headers=boss), 404)


def test_the_export_writes_the_catalog_as_a_csv_to_download(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        mine = product(
            client,
            boss,
            name=unique('Export, "quoted"'),
            description="line one\nline two",
            price="7.5",
            stock=2,
            owner_id="01a20e6b-0000-7000-8000-000000000001",
        )
        withdrawn = product(client, boss, name=unique("Export withdrawn"), stock=0, active=False)

        run = run_job(client, boss, "export-products")
        assert run["status"] == "succeeded", run
        assert run["trigger"] == "manual" and run["error"] is None, run
        rows = run["counts"]["rows"]
        assert rows >= 2, run

        listing = client.get("/api/v1/exports", headers=boss, params={"limit": 500})
        assert listing.status_code == 200, listing.text
        files = [f for f in listing.json()["items"] if f["run_id"] == run["id"]]
        assert len(files) == 1, listing.json()
        made = files[0]
        assert re.fullmatch(r"products_\d{8}_\d{6}\.csv", made["file_name"]), made
        assert made["rows"] == rows and made["size_bytes"] > 0, made
        assert made["download_url"] == f"/api/v1/exports/{made['file_name']}", made

        download = client.get(made["download_url"], headers=boss)
        assert download.status_code == 200, download.text
        assert download.headers["content-type"].startswith("text/csv"), download.headers
        assert len(download.content) == made["size_bytes"]
        table = list(csv.reader(io.StringIO(download.text)))
        assert table[0] == HEADER, table[0]
        assert len(table) == rows + 1, (len(table), rows)
        by_id = {row[0]: row for row in table[1:]}
        assert len(by_id) == rows, "a product exported twice"

        row = by_id[mine["id"]]
        assert row[:6] == [
            mine["id"],
            mine["name"],
            "line one\nline two",
            "7.50",
            "Available",
            "01a20e6b-0000-7000-8000-000000000001",
        ], row
        assert row[6].endswith("Z") and row[6][:19] == mine["created_at"][:19], row
        # Withdrawn products are exported too, as unavailable and without a customer.
        assert by_id[withdrawn["id"]][4:6] == ["Unavailable", ""], by_id[withdrawn["id"]]
        assert Decimal(by_id[withdrawn["id"]][3]) == Decimal(withdrawn["price"])

        is_problem(client.get("/api/v1/exports/products_19700101_000000.csv", headers=boss), 404)
        is_problem(client.get("/api/v1/exports/..%2F..%2Fetc%2Fpasswd", headers=boss), 404)


def test_the_product_sync_brings_in_the_partners_products(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        run = run_job(client, boss, "sync-external-products")
        assert run["status"] == "succeeded", run
        counts = run["counts"]
        assert counts["failed"] == 0, run
        fetched = counts["created"] + counts["updated"] + counts["unchanged"]
        assert fetched > 0, run

        synced = until(
            lambda: partner_products_once(client, boss, fetched),
            f"{fetched} partner products in the catalog",
        )
        assert all(p["source"] == "partner" and p["external_id"] for p in synced), synced
        assert len({p["external_id"] for p in synced}) == fetched
        on_shelf = client.get("/api/v1/products", params={"source": "partner", "limit": 500})
        assert on_shelf.status_code == 200, on_shelf.text
        assert on_shelf.json()["total"] > 0, on_shelf.json()
        assert all(p["source"] == "partner" for p in on_shelf.json()["items"])
        local = client.get("/api/v1/products", params={"source": "local", "limit": 500}).json()
        assert not {p["id"] for p in local["items"]} & {p["id"] for p in synced}

        # Nothing changed at the partner: a second run creates nothing and changes nothing.
        again = run_job(client, boss, "sync-external-products")
        assert again["status"] == "succeeded", again
        assert (again["counts"]["created"], again["counts"]["updated"]) == (0, 0), again
        assert again["counts"]["unchanged"] == fetched, again
        assert len(partner_products(client, boss)) == fetched


def test_the_order_sync_imports_the_partners_orders(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        run = run_job(client, boss, "sync-external-orders")
        assert run["status"] == "succeeded", run
        counts = run["counts"]
        fetched = counts["created"] + counts["updated"] + counts["unchanged"]
        assert fetched > 0 and counts["failed"] == 0, run

        answer = client.get("/api/v1/external-orders", headers=boss, params={"limit": 500})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert page["total"] == fetched == len(page["items"]), (page["total"], run)
        assert len({o["external_id"] for o in page["items"]}) == fetched
        for order in page["items"]:
            assert order["source"] == "partner" and order["external_id"], order
            assert re.fullmatch(r"\d+\.\d{2}", order["total"]), order
        only = client.get(
            "/api/v1/external-orders", headers=boss, params={"source": "partner", "limit": 500}
        )
        assert only.json()["total"] == fetched, only.text
        none = client.get("/api/v1/external-orders", headers=boss, params={"source": unique("x")})
        assert none.json()["total"] == 0, none.text


def test_the_token_status_never_shows_a_token(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        # A run that needs the partner's token, so at least one is cached.
        assert run_job(client, boss, "sync-external-orders")["status"] == "succeeded"
        answer = client.get("/api/v1/integration/token/status", headers=boss)
        assert answer.status_code == 200, answer.text
        status = answer.json()
        assert status and isinstance(status, dict), status
        assert any(upstream["has_token"] for upstream in status.values()), status
        for name, upstream in status.items():
            assert set(upstream) == TOKEN_FIELDS, (name, upstream)
            assert isinstance(upstream["requests_last_hour"], int), upstream
            assert upstream["circuit_state"] in ("closed", "half_open", "open", None), upstream
            assert 0 <= upstream["requests_last_hour"] <= upstream["budget_per_hour"], upstream
            if upstream["has_token"]:
                assert upstream["expires_at"] and upstream["renew_at"], upstream
        text = json.dumps(status)
        assert "access_token" not in text and "secret" not in text.lower(), text
        leaked = [s for s in strings(status) if TOKENISH.search(s)]
        assert not leaked, leaked


def test_a_triggered_sync_shows_in_the_sync_status(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        queued = client.post("/api/v1/sync/trigger", headers=boss)
        assert queued.status_code == 202, queued.text
        assert set(queued.json()) == {"run_id"}, queued.json()
        run_id = queued.json()["run_id"]

        def succeeded() -> dict[str, Any] | None:
            answer = client.get("/api/v1/sync/status", headers=boss)
            assert answer.status_code == 200, answer.text
            assert set(answer.json()) == {"runs", "next_run_at"}, answer.json()
            run = next((r for r in answer.json()["runs"] if r["id"] == run_id), None)
            assert run is None or run["status"] != "failed", run
            return run if run and run["status"] == "succeeded" else None

        run = until(succeeded, f"the triggered sync {run_id}", timeout=120)
        assert run["started_at"] and run["finished_at"], run
        assert run["failed"] == 0 and run["error"] is None, run
        assert run["created"] + run["updated"] + run["unchanged"] > 0, run
        # It is the product sync job's run, in that job's history too.
        assert ended(client, boss, "sync-external-products", run_id)["status"] == "succeeded"


def test_only_admins_reach_the_jobs(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        user = newcomer(client, "nosy")
        before = run_totals(client, boss)
        calls = (
            ("GET", "/api/v1/jobs"),
            ("POST", "/api/v1/jobs/export-products/run"),
            ("GET", "/api/v1/jobs/export-products/runs"),
            ("GET", "/api/v1/exports"),
            ("GET", "/api/v1/external-orders"),
            ("GET", "/api/v1/integration/token/status"),
            ("POST", "/api/v1/sync/trigger"),
            ("GET", "/api/v1/sync/status"),
        )
        for method, path in calls:
            is_problem(client.request(method, path, headers=user), 403)
            is_problem(client.request(method, path), 401)
        assert run_totals(client, boss) == before, "a refused call queued a run"
