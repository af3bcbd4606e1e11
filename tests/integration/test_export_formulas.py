"""CSV formula injection in the product export (issue 11 item 12).

Cells starting with `=`, `+`, `-`, `@`, tab or CR are written with a leading `'` (OWASP), the
price column stays a plain number, and `MERCATO_EXPORT_NEUTRALISE_FORMULAS=false` writes every
cell as it came for machine readers. The export job runs for real against a stand-in identity
and catalog serving DESIGN §2's shapes over HTTP.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.integration.test_export_csv_copy import export_file

SECRET = secrets.token_urlsafe(32)
HOSTILE = [
    ('=HYPERLINK("http://evil.example","click")', "-5 degrees and rising"),
    ("+1+2", "@SUM(A1:A9)"),
    ("\tTabbed", "\rCarriage"),
    ("-minus first", "=1+1"),
    ("Plain name", "a - dash inside = fine"),
]


def product(i: int, name: str, description: str) -> dict[str, Any]:
    return {
        "id": f"0190c5f0-0000-7000-8000-{i:012d}",
        "name": name,
        "description": description,
        "price": "19.99",
        "status": "available",
        "owner_id": "@owner" if i == 1 else None,
        "created_at": f"2026-01-01T00:00:0{i}+00:00",
    }


def stand_in() -> FastAPI:
    app = FastAPI()
    token = secrets.token_urlsafe(16)

    @app.post("/oauth/token")
    async def issue(request: Request) -> JSONResponse:
        await request.form()
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    @app.get("/api/v1/products/export")
    async def export(request: Request) -> Any:
        async def lines() -> AsyncIterator[bytes]:
            for i, (name, description) in enumerate(HOSTILE, start=1):
                yield (json.dumps(product(i, name, description)) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return app


async def export_rows(tmp_path: Path, **overrides: Any) -> list[list[str]]:
    run, written = await export_file(tmp_path, stand_in(), **overrides)
    assert run.status == "succeeded", run.error
    return list(csv.reader(io.StringIO(written.decode("utf-8"), newline="")))


async def test_formula_cells_are_neutralised_and_prices_stay_numbers(tmp_path: Path) -> None:
    rows = await export_rows(tmp_path)
    body = rows[1:]
    assert [(r[1], r[2]) for r in body] == [
        ('\'=HYPERLINK("http://evil.example","click")', "'-5 degrees and rising"),
        ("'+1+2", "'@SUM(A1:A9)"),
        ("'\tTabbed", "'\rCarriage"),
        ("'-minus first", "'=1+1"),
        ("Plain name", "a - dash inside = fine"),  # only a leading trigger counts
    ]
    assert body[0][5] == "'@owner"  # every text column, not only the name
    assert {r[3] for r in body} == {"19.99"}  # the price column is a plain number
    assert rows[0][0] == "Product ID"  # the header is ours, untouched


async def test_the_setting_turns_it_off_for_machine_readers(tmp_path: Path) -> None:
    rows = await export_rows(tmp_path, export_neutralise_formulas=False)
    assert [(r[1], r[2]) for r in rows[1:]] == HOSTILE
