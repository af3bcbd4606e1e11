"""Issue 11, items 4, 15 and 10 against the in-process app: the client address behind trusted
proxies (and only behind them), what browsers are told (CORS, security headers, the docs pages'
Content-Security-Policy), and the password grant, off unless a setting turns it on."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pydantic
import pytest
import yaml

from mercato.devcluster import HOST, PROXY_SOURCE, ClusterConfig, DevCluster
from mercato.gateway import GATEWAY, ROUTES, compose_nginx_conf
from mercato.gateway_app import create_gateway_app
from mercato.platform.browser import script_hashes
from mercato.platform.settings import Settings
from tests.harness import USER_PASSWORD, Stack, admin, embedded_settings, register_user, stack

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
IDENTITY = ["accounts", "identity"]
GUESS = "Wrong-Guess-123456"
EVIL = "https://evil.example"
SHOP = "https://shop.example"


@asynccontextmanager
async def peer(s: Stack, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the stack's app whose socket peer is `address`."""
    transport = httpx.ASGITransport(app=s.app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://mercato.test") as client:
        yield client


async def login(client: httpx.AsyncClient, who: str, password: str, xff: str) -> int:
    answer = await client.post(
        "/api/v1/auth/login",
        json={"username_or_email": who, "password": password},
        headers={"X-Forwarded-For": xff},
    )
    return answer.status_code


@pytest.fixture
def slow_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    # A lock-out outlasts the test (the default first one, 1 s, would race the checks).
    monkeypatch.setenv("MERCATO_IDENTITY_LOGIN_BASE_DELAY_SECONDS", "120")


# --- item 4: forwarded addresses --------------------------------------------------------------


async def test_behind_a_trusted_proxy_one_clients_failures_do_not_lock_out_another(
    data_dir: Path, slow_locks: None
) -> None:
    settings = embedded_settings(data_dir, trusted_proxies=("127.0.0.1/32",))
    async with stack(settings, IDENTITY) as s:
        await register_user(s, "jane")
        async with peer(s, "127.0.0.1") as proxy:
            # 21 failures (the default 20 free ones, and one more), each on another account,
            # so only the per-address throttle can lock anything.
            for n in range(21):
                assert await login(proxy, f"nobody{n}", GUESS, "203.0.113.7") == 401
            assert await login(proxy, "jane", USER_PASSWORD, "203.0.113.7") == 429
            assert await login(proxy, "jane", USER_PASSWORD, "198.51.100.9") == 200


@pytest.mark.parametrize(
    ("trusted", "forwarded"),
    [
        # The default: nobody is trusted, so a loopback peer's header is ignored.
        ((), lambda n: f"198.18.0.{n}"),
        # Trusted proxies elsewhere: this peer is not one of them.
        (("10.9.0.0/16",), lambda n: f"198.18.0.{n}"),
        # A trusted proxy that appends: the client's own entries left of it count for nothing.
        (("127.0.0.1/32",), lambda n: f"198.18.0.{n}, 203.0.113.7"),
    ],
    ids=["no-trusted-proxy", "untrusted-peer", "appended-chain"],
)
async def test_rotating_x_forwarded_for_does_not_skip_the_per_address_limit(
    data_dir: Path,
    slow_locks: None,
    monkeypatch: pytest.MonkeyPatch,
    trusted: tuple[str, ...],
    forwarded: Callable[[int], str],
) -> None:
    # 3 free failures stand for the default 20 here (each guess costs a password hash).
    monkeypatch.setenv("MERCATO_IDENTITY_IP_FREE_FAILURES", "3")
    settings = embedded_settings(data_dir, trusted_proxies=trusted)
    async with stack(settings, IDENTITY) as s, peer(s, "127.0.0.1") as client:
        answers = [await login(client, f"nobody{n}", GUESS, forwarded(n)) for n in range(7)]
    # Each guess claims another address; all count against the one they come from.
    assert answers == [401] * 4 + [429] * 3


def test_trusted_proxies_are_cidrs_and_nothing_else() -> None:
    assert Settings().trusted_proxies == ()
    parsed = Settings(trusted_proxies="10.0.0.7, 172.29.80.0/24,::1")  # type: ignore[arg-type]
    assert parsed.trusted_proxies == ("10.0.0.7/32", "172.29.80.0/24", "::1/128")
    for bad in ("*", "localhost", "10.0.0.1/8", "10.0.0.0/33"):
        with pytest.raises(pydantic.ValidationError, match="not a CIDR network"):
            Settings(trusted_proxies=bad)  # type: ignore[arg-type]


def _covers(networks: str, address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(n.strip()) for n in networks.split(","))


def test_compose_trusts_exactly_the_gateway() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    trusted = compose["x-mercato-env"]["MERCATO_TRUSTED_PROXIES"]
    gateway = compose["services"]["gateway"]["networks"]["default"]["ipv4_address"]
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert _covers(trusted, gateway)
    # No other address of the network (another container, Docker's gateway) is trusted.
    others = [str(a) for a in ipaddress.ip_network(subnet).hosts() if str(a) != gateway]
    assert not any(_covers(trusted, a) for a in others)
    # nginx is the edge: it sends the address it saw, never a chain a client started.
    conf = compose_nginx_conf()
    assert "X-Forwarded-For $remote_addr;" in conf and "$proxy_add_x_forwarded_for" not in conf


def test_the_dev_cluster_trusts_its_nginx_and_not_the_direct_clients(tmp_path: Path) -> None:
    cluster = DevCluster(ClusterConfig(workdir=tmp_path, database_url="postgresql://x/y", port=0))
    try:
        trusted = cluster.env["MERCATO_TRUSTED_PROXIES"]
        upstreams = {service: [f"{HOST}:9"] for service in (*ROUTES, GATEWAY)}
        cluster._write_nginx(upstreams)
        conf = (tmp_path / "nginx.conf").read_text()
    finally:
        cluster.stop()
    assert f"proxy_bind {PROXY_SOURCE};" in conf
    assert _covers(trusted, PROXY_SOURCE) and not _covers(trusted, HOST)


# --- item 15: browsers ------------------------------------------------------------------------

SECURITY = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


def assert_secured(answer: httpx.Response) -> None:
    for name, value in SECURITY.items():
        assert answer.headers.get(name) == value, (answer.url, name)
    assert "server" not in answer.headers
    policy = answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy, policy


def directives(policy: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *sources = part.split()
        parsed[name] = sources
    return parsed


def allowed(policy: dict[str, list[str]], directive: str, url: str) -> bool:
    sources = policy.get(directive, policy["default-src"])
    parts = urlsplit(url)
    if not parts.scheme:
        return "'self'" in sources
    return f"{parts.scheme}://{parts.netloc}" in sources


def assert_page_policy(page: httpx.Response) -> None:
    """Every asset the page names is allowed by its policy, its inline scripts by hash, and
    nothing is allowed inline for scripts."""
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert_secured(page)
    policy = directives(page.headers["content-security-policy"])
    assert policy["default-src"] == ["'none'"]
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]
    for src in re.findall(r'<script[^>]*\bsrc="([^"]+)"', page.text):
        assert allowed(policy, "script-src", src), src
    for href in re.findall(r'<link[^>]*rel="stylesheet"[^>]*>', page.text):
        url = re.search(r'href="([^"]+)"', href)
        assert url is not None and allowed(policy, "style-src", url.group(1)), href
    for href in re.findall(r'<link[^>]*rel="shortcut icon" href="([^"]+)"', page.text):
        assert allowed(policy, "img-src", href), href
    hashes = script_hashes(page.text)
    assert set(hashes) <= set(policy["script-src"])
    if "openapi.json" in page.text:  # the document is fetched from this origin
        assert "'self'" in policy["connect-src"]


async def test_api_answers_and_errors_carry_the_security_headers(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir, max_body_bytes=1024), IDENTITY) as s:
        answers = [
            await s.client.get("/health"),
            await s.client.get("/.well-known/openid-configuration"),
            await s.client.get("/api/v1/auth/me"),  # 401 problem
            await s.client.get("/api/v1/nothing-here"),  # 404 problem
            await s.client.post("/api/v1/auth/login", content=b"x" * 4096),  # the platform's 413
        ]
    assert [a.status_code for a in answers] == [200, 200, 401, 404, 413]
    for answer in answers:
        assert_secured(answer)
        assert (
            answer.headers["content-security-policy"]
            == "default-src 'none'; frame-ancestors 'none'"
        )


async def test_the_docs_pages_allow_exactly_what_they_load(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir), IDENTITY) as s:
        pages = {p: await s.client.get(p) for p in ("/docs", "/redoc", "/docs/oauth2-redirect")}
    for page in pages.values():
        assert_page_policy(page)
    swagger = directives(pages["/docs"].headers["content-security-policy"])
    assert len(script_hashes(pages["/docs"].text)) == 1  # Swagger UI's bootstrap, by hash
    assert "blob:" not in " ".join(swagger["script-src"])
    redoc = directives(pages["/redoc"].headers["content-security-policy"])
    assert redoc["worker-src"] == ["blob:"]  # ReDoc's search worker
    assert redoc["font-src"] == ["'self'"]  # no font from elsewhere: the docs work offline
    # The redirect page allows its own inline script and nothing else.
    redirect = directives(pages["/docs/oauth2-redirect"].headers["content-security-policy"])
    assert redirect["script-src"] == script_hashes(pages["/docs/oauth2-redirect"].text)


async def test_the_gateway_companion_says_the_same_to_browsers(data_dir: Path) -> None:
    gateway = create_gateway_app({}, document=lambda: {"openapi": "3.1.0", "paths": {}})
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        assert_secured(await client.get("/openapi.json"))
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert_page_policy(await client.get(path))
        preflight = await client.options("/openapi.json", headers=preflight_headers(EVIL))
        assert "access-control-allow-origin" not in preflight.headers


def preflight_headers(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_cors_is_off_by_default(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir), IDENTITY) as s:
        preflight = await s.client.options("/api/v1/auth/login", headers=preflight_headers(SHOP))
        simple = await s.client.get("/health", headers={"Origin": SHOP})
    assert preflight.status_code == 405
    for answer in (preflight, simple):
        assert not any(h.startswith("access-control-") for h in answer.headers), answer.headers


async def test_cors_answers_the_listed_origins_only(data_dir: Path) -> None:
    settings = embedded_settings(data_dir, cors_origins=(SHOP,))
    async with stack(settings, IDENTITY) as s:
        ok = await s.client.options("/api/v1/auth/login", headers=preflight_headers(SHOP))
        refused = await s.client.options("/api/v1/auth/login", headers=preflight_headers(EVIL))
        simple = await s.client.get("/api/v1/auth/me", headers={"Origin": SHOP})
        other = await s.client.get("/api/v1/auth/me", headers={"Origin": EVIL})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == SHOP
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in ok.headers  # bearer tokens, no cookies
    assert "access-control-allow-origin" not in refused.headers
    # An error answer is readable by the listed origin (and names its correlation id).
    assert simple.status_code == 401 and simple.headers["access-control-allow-origin"] == SHOP
    assert "x-correlation-id" in simple.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in other.headers
    assert_secured(simple)


def test_cors_origins_are_origins() -> None:
    assert Settings().cors_origins == ()
    parsed = Settings(cors_origins="https://Shop.example, http://localhost:5173")  # type: ignore[arg-type]
    assert parsed.cors_origins == ("https://shop.example", "http://localhost:5173")
    for bad in ("*", "shop.example", "https://shop.example/", "https://shop.example/app"):
        with pytest.raises(pydantic.ValidationError, match="not an origin"):
            Settings(cors_origins=bad)  # type: ignore[arg-type]


# --- item 10: the password grant --------------------------------------------------------------


async def password_client(s: Stack) -> str:
    boss = await admin(s)
    made = await s.client.post(
        "/api/v1/admin/clients",
        headers=boss.headers,
        json={
            "client_id": "app",
            "name": "app",
            "scopes": [],
            "grant_types": ["client_credentials", "password"],
        },
    )
    assert made.status_code == 201, made.text
    return str(made.json()["client_secret"])


async def metadata(s: Stack) -> list[dict[str, Any]]:
    return [
        (await s.client.get(path)).json()
        for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
    ]


async def test_the_password_grant_is_off_by_default(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir), IDENTITY) as s:
        await register_user(s, "jane")
        secret = await password_client(s)
        form = {"grant_type": "password", "username": "jane", "password": USER_PASSWORD}
        refused = await s.client.post("/oauth/token", data=form, auth=("app", secret))
        documents = await metadata(s)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "unsupported_grant_type"
    assert "password" not in refused.json()["error_description"]
    for document in documents:
        assert document["grant_types_supported"] == ["client_credentials", "refresh_token"]


async def test_a_setting_turns_the_password_grant_on(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERCATO_IDENTITY_PASSWORD_GRANT_ENABLED", "true")
    async with stack(embedded_settings(data_dir), IDENTITY) as s:
        await register_user(s, "jane")
        secret = await password_client(s)
        form = {"grant_type": "password", "username": "jane", "password": USER_PASSWORD}
        granted = await s.client.post("/oauth/token", data=form, auth=("app", secret))
        documents = await metadata(s)
    assert granted.status_code == 200, granted.text
    for document in documents:
        assert "password" in document["grant_types_supported"]
