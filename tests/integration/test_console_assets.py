"""The web console's files (`mercato.console`): served by the embedded app and by the gateway's
companion, with the page's strict policy, and self-contained: every file the page loads is one
of them, and none names another host. (The browser tests are tests/e2e/test_console.py.)"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI

from mercato.app import create_app, create_service_app
from mercato.console import POLICY, load_assets
from mercato.gateway import GATEWAY, owner_of
from mercato.gateway_app import create_gateway_app
from mercato.platform.settings import Settings
from tests.harness import embedded_settings


def client(app: FastAPI) -> httpx.AsyncClient:
    # Built, never started: no lifespan runs, nothing is contacted.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test")


@pytest.fixture(params=["embedded", "gateway"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> FastAPI:
    if request.param == "embedded":
        return create_app(embedded_settings(tmp_path))
    return create_gateway_app({}, document=dict, platform_settings=Settings(data_dir=tmp_path))


async def test_the_page_and_its_files_are_served_with_the_strict_policy(app: FastAPI) -> None:
    async with client(app) as http:
        page = await http.get("/console", headers={"Accept-Encoding": "identity"})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == POLICY
        assert page.headers["x-content-type-options"] == "nosniff"
        for name, asset in load_assets().items():
            answer = await http.get(f"/console/{name}", headers={"Accept-Encoding": "identity"})
            assert answer.status_code == 200, name
            assert answer.content == asset.body
            assert answer.headers["content-type"] == asset.media_type
            # Revalidated, not refetched: the same ETag answers 304.
            again = await http.get(f"/console/{name}", headers={"If-None-Match": asset.etag})
            assert again.status_code == 304
        zipped = await http.get("/console/app.js", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.content == load_assets()["app.js"].body  # httpx decodes it
        slash = await http.get("/console/", follow_redirects=False)
        assert slash.status_code == 308 and slash.headers["location"] == "/console"
        missing = await http.get("/console/../../etc/passwd")
        assert missing.status_code == 404
        assert (await http.get("/console/nothing.js")).status_code == 404
        assert "/console" not in (await http.get("/openapi.json")).text


async def test_a_service_replica_serves_no_console(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        redis_url="redis://127.0.0.1:9/0",
        secrets_key=Fernet.generate_key().decode(),
        issuer="http://gateway.test",
    )
    async with client(create_service_app("orders", settings)) as http:
        assert (await http.get("/console")).status_code == 404


def test_the_gateway_sends_the_console_to_its_companion() -> None:
    assert owner_of("/console") == GATEWAY
    assert owner_of("/console/pages/orders.js") == GATEWAY
    assert owner_of("/consoles") is None


def test_the_console_loads_nothing_but_its_own_files() -> None:
    assets = load_assets()
    assert gzip.decompress(assets["index.html"].gzipped) == assets["index.html"].body
    page = assets["index.html"].body.decode()
    # No inline script or style, nothing from elsewhere.
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page) is None
    assert "<style" not in page and " style=" not in page
    referenced = re.findall(r'(?:src|href)="/console/([^"]+)"', page)
    assert referenced and all(name in assets for name in referenced)
    for name, asset in assets.items():
        # An XML namespace is a name, not something loaded.
        text = re.sub(r'xmlns(?::\w+)?="[^"]*"', "", asset.body.decode())
        assert not re.search(r"(?<![\w.])(?:https?:)?//[a-z0-9-]+\.[a-z]", text), name
        if name.endswith(".js"):
            # Data enters the page as text only (mercato.console's dom.js), never as markup.
            assert "innerHTML" not in text and "insertAdjacentHTML" not in text, name
            folder = name.rpartition("/")[0]
            for module in re.findall(r'from "(\.{1,2}/[^"]+)"', text):
                resolved = Path(folder or ".", module).as_posix()
                parts: list[str] = []
                for part in resolved.split("/"):
                    if part == "..":
                        parts.pop()
                    elif part not in (".", ""):
                        parts.append(part)
                assert "/".join(parts) in assets, (name, module)
