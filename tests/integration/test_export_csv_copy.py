"""The export job copies catalog's `text/csv` export into its file without parsing it.

A stand-in identity and catalog (DESIGN §2's shapes over HTTP) serve a CSV body in awkward
chunks: the job drops catalog's header row for its own (or none), forwards its formula setting,
counts records whose cells hold line breaks, and refuses a body that is not in its columns.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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

SECRET = secrets.token_urlsafe(32)
HEADER = (",".join(CSV_HEADER) + "\r\n").encode()
ROWS = (
    b'id-1,"One","plain",1.00,Available,"",2026-01-01T00:00:01Z\r\n'
    b'id-2,"Two, ""quoted""","line\r\nbreak",2.50,Unavailable,"",2026-01-01T00:00:02Z\r\n'
    b'id-3,"\'=1+1","",3.00,Available,"o",2026-01-01T00:00:03Z\r\n'
)


def stand_in(seen: list[dict[str, str]], header: bytes = HEADER) -> FastAPI:
    app = FastAPI()

    @app.post("/oauth/token")
    async def issue(request: Request) -> JSONResponse:
        await request.form()
        return JSONResponse({"access_token": "t", "token_type": "Bearer", "expires_in": 3600})

    @app.get("/api/v1/products/export")
    async def export(request: Request) -> Any:
        seen.append({"accept": request.headers["accept"], **request.query_params})
        body = header + ROWS

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 7):  # splits rows, cells and \r\n alike
                yield body[i : i + 7]

        headers = {"X-Total-Count": "3"}
        return StreamingResponse(chunks(), media_type="text/csv; charset=utf-8", headers=headers)

    return app


async def export_file(tmp_path: Path, app: FastAPI, **overrides: Any) -> tuple[Any, bytes]:
    database = Database("integration", f"sqlite+aiosqlite:///{tmp_path / 'integration.db'}")
    await upgrade(database, [MIGRATIONS])
    async with serving(app) as base:
        runtime = Integration(
            settings=Settings(data_dir=tmp_path / "data"),
            integ=IntegrationSettings(public_url=base, **overrides),
            database=database,
            exporter=ExporterHandover(ExporterCredentials(EXPORTER_CLIENT_ID, SECRET)),
        )
        await runtime.start()
        try:
            run = await runtime.scheduler.run_now("export-products")
            written = b""
            if run.status == "succeeded":
                written = (runtime.export_dir / str(run.output)).read_bytes()
            return run, written
        finally:
            await runtime.stop()
            await database.dispose()


async def test_the_csv_is_copied_behind_the_jobs_header(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []
    run, written = await export_file(tmp_path, stand_in(seen))
    assert run.status == "succeeded", run.error
    assert written == HEADER + ROWS
    assert run.counts["rows"] == 3 and run.counts["skipped"] == 0
    assert seen[0]["accept"].startswith("text/csv")
    assert seen[0]["neutralise_formulas"] == "true"


async def test_no_header_and_no_neutralising_when_the_settings_say_so(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []
    run, written = await export_file(
        tmp_path,
        stand_in(seen),
        export_include_header=False,
        export_neutralise_formulas=False,
    )
    assert run.status == "succeeded", run.error
    assert written == ROWS and run.counts["rows"] == 3
    assert seen[0]["neutralise_formulas"] == "false"


async def test_a_csv_in_other_columns_fails_the_run(tmp_path: Path) -> None:
    run, _ = await export_file(tmp_path, stand_in([], header=b"id,name\r\n"))
    assert run.status == "failed" and "header" in str(run.error)
