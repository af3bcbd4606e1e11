"""The export job over real HTTP, writing real files.

Identity's `/oauth/token` and catalog's `/api/v1/products/export` are not on this branch yet,
so `contract_app` below serves exactly what DESIGN §2 says they answer (client credentials,
NDJSON in `created_at, id` order); the end-to-end test through the real platform replaces it
once those services are merged.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from mercato.identity.contracts import (
    EXPORTER_CLIENT_ID,
    ExporterCredentials,
    ExporterHandover,
)
from mercato.integration.domain import CSV_HEADER
from mercato.integration.module import MIGRATIONS
from mercato.integration.runtime import Integration
from mercato.integration.settings import IntegrationSettings
from mercato.platform.db import Database
from mercato.platform.migrations import upgrade
from mercato.platform.settings import Settings
from tests.integration.partner_server import serving

EXPORT = "export-products"
SECRET = secrets.token_urlsafe(32)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def product(i: int) -> dict[str, Any]:
    """The i-th product, shaped as DESIGN §2's product."""
    active, stock = i % 5 != 0, i % 3
    return {
        "id": f"0190c5f0-0000-7000-8000-{i:012d}",
        "name": f'Product {i}, "quoted"',
        "description": f"line one of {i}\nline two",
        "author": None,
        "category": "books",
        "price": f"{i}.{i % 100:02d}",
        "currency": "USD",
        "stock": stock,
        "active": active,
        "status": "available" if active and stock > 0 else "unavailable",
        "owner_id": f"owner-{i}" if i % 2 else None,
        "external_id": None,
        "source": "local",
        "created_at": (T0 + timedelta(seconds=i)).isoformat(),
        "updated_at": (T0 + timedelta(seconds=i)).isoformat(),
    }


@dataclass
class Contract:
    """What the stand-in identity and catalog saw, and knobs to make them misbehave."""

    products: int = 25
    tokens: set[str] = field(default_factory=set)
    token_requests: int = 0
    scopes: list[str] = field(default_factory=list)
    break_after: int | None = None  # close the stream after that many lines
    delay_every: int = 0  # pause a little every N lines (lets a reader look mid-run)


def contract_app(state: Contract) -> FastAPI:
    app = FastAPI()

    @app.post("/oauth/token")
    async def token(request: Request) -> JSONResponse:
        form = await request.form()
        state.token_requests += 1
        if request.headers.get("authorization", "").lower().startswith("basic "):
            import base64

            given = base64.b64decode(request.headers["authorization"][6:]).decode()
            ok = given == f"{EXPORTER_CLIENT_ID}:{SECRET}"
        else:
            ok = form.get("client_secret") == SECRET
        if not ok or form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        state.scopes.append(str(form.get("scope")))
        value = secrets.token_urlsafe(16)
        state.tokens.add(value)
        return JSONResponse({"access_token": value, "token_type": "Bearer", "expires_in": 3600})

    @app.get("/api/v1/products/export")
    async def export(request: Request) -> Any:
        presented = request.headers.get("authorization", "").removeprefix("Bearer ")
        if presented not in state.tokens:
            return JSONResponse({"detail": "unauthorized"}, status_code=401)

        async def lines() -> AsyncIterator[bytes]:
            for i in range(1, state.products + 1):
                if state.break_after is not None and i > state.break_after:
                    raise RuntimeError("catalog went away mid-stream")
                if state.delay_every and i % state.delay_every == 0:
                    await asyncio.sleep(0.005)
                yield (json.dumps(product(i)) + "\n").encode()

        headers = {"X-Total-Count": str(state.products)}
        return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)

    return app


Build = Callable[..., Awaitable[Integration]]


@pytest.fixture
async def platform() -> AsyncIterator[tuple[str, Contract]]:
    state = Contract()
    async with serving(contract_app(state)) as base:
        yield base, state


@pytest.fixture
async def build(tmp_path: Path) -> AsyncIterator[Build]:
    made: list[Integration] = []
    database = Database("integration", f"sqlite+aiosqlite:///{tmp_path / 'integration.db'}")
    await upgrade(database, [MIGRATIONS])

    async def make(base: str, handed: bool = True, **overrides: Any) -> Integration:
        handover = ExporterHandover(ExporterCredentials(EXPORTER_CLIENT_ID, SECRET))
        runtime = Integration(
            settings=Settings(data_dir=tmp_path / "data"),
            integ=IntegrationSettings(public_url=base, **overrides),
            database=database,
            exporter=handover if handed else ExporterHandover(),
        )
        await runtime.start()
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.stop()
    await database.dispose()


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


async def test_export_writes_every_product_as_seed_000_says(
    build: Build, platform: tuple[str, Contract]
) -> None:
    base, state = platform
    runtime = await build(base)
    run = await runtime.scheduler.run_now(EXPORT)
    assert run.status == "succeeded", run.error
    assert run.output is not None and run.output.startswith("products_")
    assert run.counts["rows"] == 25 and run.counts["skipped"] == 0
    rows = read_csv(runtime.export_dir / run.output)
    assert rows[0] == list(CSV_HEADER)
    assert len(rows) == 26
    first = product(1)
    assert rows[1] == [
        first["id"],
        'Product 1, "quoted"',
        "line one of 1\nline two",
        "1.01",
        "Available",
        "owner-1",
        "2026-01-01T00:00:01Z",
    ]
    assert rows[5][4] == "Unavailable" and rows[2][5] == ""  # inactive; no owner
    assert [r[0] for r in rows[1:]] == [product(i)["id"] for i in range(1, 26)]
    assert state.scopes == ["catalog.read"] and state.token_requests == 1
    files, total = await runtime.service.exports(0, 50)
    assert total == 1 and files[0].file_name == run.output and files[0].rows == 25
    assert await runtime.service.export_path(run.output) == (runtime.export_dir / run.output)
    assert [p.name for p in runtime.export_dir.iterdir()] == [run.output]  # no temp left


async def test_the_progress_knows_the_total_from_the_catalogs_count(
    build: Build, platform: tuple[str, Contract]
) -> None:
    base, _ = platform
    runtime = await build(base)
    seen: list[tuple[int, int | None]] = []
    run = await runtime.scheduler.run_now(EXPORT, progress=lambda d, t: seen.append((d, t)))
    assert run.status == "succeeded", run.error
    # The catalog's X-Total-Count, from the first report on: the bar has an end.
    assert seen[0] == (0, 25) and seen[-1] == (25, 25)
    assert {total for _, total in seen} == {25}


async def test_header_switch_and_credentials_kept_across_restarts(
    build: Build, platform: tuple[str, Contract]
) -> None:
    base, _ = platform
    await build(base)  # first start: identity hands the credentials over, they are kept
    later = await build(base, handed=False, export_include_header=False)
    run = await later.scheduler.run_now(EXPORT)
    assert run.status == "succeeded", run.error
    rows = read_csv(later.export_dir / str(run.output))
    assert len(rows) == 25 and rows[0][0] == product(1)["id"]


async def test_twelve_runs_leave_the_newest_ten(
    build: Build, platform: tuple[str, Contract]
) -> None:
    base, state = platform
    state.products = 3
    runtime = await build(base)
    outputs = [str((await runtime.scheduler.run_now(EXPORT)).output) for _ in range(12)]
    assert len(set(outputs)) == 12  # same second: suffixed, never overwritten
    kept = sorted(p.name for p in runtime.export_dir.iterdir())
    assert kept == sorted(outputs[2:])
    files, total = await runtime.service.exports(0, 50)
    assert total == 10 and [f.file_name for f in files] == outputs[:1:-1]
    assert state.token_requests == 1


async def test_a_reader_never_opens_a_partial_file(
    build: Build, platform: tuple[str, Contract]
) -> None:
    base, state = platform
    state.products, state.delay_every = 3000, 100
    runtime = await build(base)
    seen: list[int] = []
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            for entry in os.scandir(runtime.export_dir) if runtime.export_dir.exists() else []:
                if entry.name.endswith(".csv"):
                    rows = read_csv(Path(entry.path))
                    seen.append(len(rows))
            await asyncio.sleep(0.002)

    task = asyncio.create_task(reader())
    run = await runtime.scheduler.run_now(EXPORT)
    await asyncio.sleep(0.01)
    done.set()
    await task
    assert run.status == "succeeded"
    assert seen and set(seen) == {3001}  # header + every row, each time a file was visible


async def test_a_broken_stream_fails_the_run_and_leaves_nothing(
    build: Build, platform: tuple[str, Contract]
) -> None:
    base, state = platform
    state.break_after = 10
    runtime = await build(base)
    run = await runtime.scheduler.run_now(EXPORT)
    assert run.status == "failed" and run.error
    assert not runtime.export_dir.exists() or list(runtime.export_dir.iterdir()) == []
    assert (await runtime.service.exports(0, 10))[1] == 0
    state.break_after = None  # the next run is normal
    assert (await runtime.scheduler.run_now(EXPORT)).status == "succeeded"


async def test_a_refused_token_is_renewed_once(
    build: Build, platform: tuple[str, Contract]
) -> None:
    base, state = platform
    runtime = await build(base)
    assert (await runtime.scheduler.run_now(EXPORT)).status == "succeeded"
    state.tokens.clear()  # identity revoked it
    run = await runtime.scheduler.run_now(EXPORT)
    assert run.status == "succeeded", run.error
    assert state.token_requests == 2


async def test_without_credentials_the_export_is_disabled(
    build: Build, platform: tuple[str, Contract]
) -> None:
    base, _ = platform
    runtime = await build(base, handed=False)
    reason = await runtime.service.disabled_reason(EXPORT)
    assert reason is not None and "mercato-exporter" in reason
    with_env = await build(base, handed=False, exporter_client_secret=SECRET)
    assert await with_env.service.disabled_reason(EXPORT) is None
    assert (await with_env.scheduler.run_now(EXPORT)).status == "succeeded"
