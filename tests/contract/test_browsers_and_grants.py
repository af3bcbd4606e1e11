"""Issue 11, items 15 and 10, over HTTP on both targets: what browsers are told on API and HTML
answers, no `server` banner (the gateway's nginx and each replica included), CORS off by
default, and the password grant refused and not advertised."""

from __future__ import annotations

import httpx

from tests.contract.api import PASSWORD, admin, machine_client, register
from tests.contract.conftest import Target

API_POLICY = "default-src 'none'; frame-ancestors 'none'"
EVIL = "https://evil.example"


def secured(answer: httpx.Response, *, page: bool = False) -> None:
    """The security headers, and no banner naming the server."""
    where = (answer.request.method, str(answer.url))
    assert answer.headers.get("x-content-type-options") == "nosniff", where
    assert answer.headers.get("referrer-policy") == "no-referrer", where
    assert "server" not in answer.headers, (where, answer.headers.get("server"))
    policy = answer.headers.get("content-security-policy", "")
    if page:
        assert "default-src 'none'" in policy and "script-src" in policy, (where, policy)
        assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0], policy
    else:
        assert policy == API_POLICY, (where, policy)


def test_api_answers_carry_the_security_headers_and_no_server_banner(target: Target) -> None:
    with target.client() as client:
        answers = [
            client.get("/ready"),
            client.get("/openapi.json"),
            client.get("/.well-known/openid-configuration"),
            client.get("/api/v1/products"),
            client.get("/api/v1/auth/me"),  # a service's 401 problem
            client.get("/api/v1/products/not-a-uuid"),  # a service's 422 problem
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 200, 401, 422]
        for answer in answers:
            secured(answer)
        # What the gateway's nginx answers itself (embedded: the process) names no version.
        for own in (client.get("/health"), client.get("/api/v1/nothing-here")):
            assert own.headers.get("server") in (None, "nginx"), own.headers
            assert own.headers.get("x-content-type-options") == "nosniff"
    # Each replica, reached directly, sends no banner either (uvicorn's is off).
    for service in ["identity", "catalog", *(["gateway"] if target.cluster else [])]:
        for url in target.replicas(service):
            secured(httpx.get(f"{url}/openapi.json", timeout=10))


def test_the_docs_pages_bring_their_content_security_policy(target: Target) -> None:
    with target.client() as client:
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            page = client.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            secured(page, page=True)


def test_a_preflight_from_an_origin_not_allowed_gets_no_allow_origin(target: Target) -> None:
    headers = {
        "Origin": EVIL,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    with target.client() as client:
        for path in ("/api/v1/auth/login", "/oauth/token", "/api/v1/orders", "/openapi.json"):
            preflight = client.options(path, headers=headers)
            assert preflight.status_code >= 400, (path, preflight.status_code)
            assert "access-control-allow-origin" not in preflight.headers, (path, preflight)
        simple = client.get("/api/v1/products", headers={"Origin": EVIL})
        assert simple.status_code == 200
        assert "access-control-allow-origin" not in simple.headers


def test_the_password_grant_is_refused_and_not_advertised(target: Target) -> None:
    with target.client() as client:
        for path in (
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
        ):
            document = client.get(path)
            assert document.status_code == 200, path
            assert "password" not in document.json()["grant_types_supported"], path
        username, _ = register(client, "grant")
        boss = admin(client)
        # A client registered for the password grant still cannot use it: the server refuses.
        client_id, secret = machine_client(
            client, boss, [], grant_types=["client_credentials", "password"]
        )
        form = {"grant_type": "password", "username": username, "password": PASSWORD}
        refused = client.post("/oauth/token", data=form, auth=(client_id, secret))
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "unsupported_grant_type"
        # Every replica of identity refuses it too.
        for url in target.replicas("identity"):
            again = httpx.post(f"{url}/oauth/token", data=form, auth=(client_id, secret))
            assert again.status_code == 400 and again.json()["error"] == "unsupported_grant_type"
