"""`/docs` and `/redoc` work with no internet: every asset is served here, from an installed
package, and their policies allow this origin only; the OpenAPI document describes the OAuth
token form and shows request examples on the main operations."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from mercato.gateway import GATEWAY, ROUTES, owner_of, render_nginx
from mercato.gateway_app import create_gateway_app
from tests.harness import embedded_settings, stack

EXAMPLED = {
    "/api/v1/accounts/register": "post",
    "/api/v1/auth/login": "post",
    "/api/v1/products": "post",
    "/api/v1/wallet/topup": "post",
    "/api/v1/orders": "post",
}


def _assets(page: str) -> list[str]:
    found = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page)
    found += re.findall(r'<link[^>]*href="([^"]+)"', page)
    return found


async def _check_offline(client: httpx.AsyncClient) -> None:
    for path in ("/docs", "/redoc"):
        page = await client.get(path)
        assert page.status_code == 200
        policy = page.headers["content-security-policy"]
        assert "http" not in policy, policy  # no other origin, not even over https
        assets = _assets(page.text)
        assert assets, path
        for url in assets:
            assert url.startswith("/docs/assets/"), url
            answer = await client.get(url)
            assert answer.status_code == 200, url
            assert len(answer.content) > 1000, url
            kind = answer.headers["content-type"]
            assert kind.startswith(("text/javascript", "text/css", "image/png")), (url, kind)
    assert (await client.get("/docs/assets/../../etc/passwd")).status_code == 404
    assert (await client.get("/docs/assets/core.py")).status_code == 404


async def test_docs_load_their_assets_from_here(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir)) as s:
        await _check_offline(s.client)
        document = (await s.client.get("/openapi.json")).json()
    token = document["paths"]["/oauth/token"]["post"]["requestBody"]["content"]
    form = token["application/x-www-form-urlencoded"]["schema"]
    assert form["required"] == ["grant_type"]
    assert {"grant_type", "client_id", "client_secret", "scope"} <= set(form["properties"])
    for path, method in EXAMPLED.items():
        body = document["paths"][path][method]["requestBody"]["content"]["application/json"]
        assert body.get("examples"), path
        assert "schema" in body, path  # the generated schema is kept next to the examples


async def test_the_gateway_serves_the_assets_too() -> None:
    gateway = create_gateway_app({}, document=lambda: {"openapi": "3.1.0", "paths": {}})
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        await _check_offline(client)
    assert owner_of("/docs/assets/swagger-ui-bundle.js") == GATEWAY
    conf = render_nginx({name: ["127.0.0.1:1"] for name in [*ROUTES, GATEWAY]})
    assert "location /docs/assets/ {" in conf
