"""What the console's browser tests (test_console*.py) share: the browser, a guard on every
request a page makes, signing in through the form, a dead letter made as the backbone makes one,
and the distributed mode's gateway (nginx and its companion) in front of a platform."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, insert, select

from mercato.devcluster import ReservedPort
from mercato.gateway import GATEWAY, ROUTES, UPSTREAMS_ENV, render_nginx
from mercato.platform.clock import utcnow
from mercato.platform.events.tables import dead_letters, outbox
from mercato.platform.ids import new_id_str
from tests.e2e.conftest import RunningPlatform, until
from tests.integration.test_deploy import need
from tests.running import Processes, mercato, start_nginx, stop, wait_for

ADMIN_PASSWORD = "Admin-Pass-1234"
# The console refreshes a page every 5 s; a wait covers a few of those.
WAIT_MS = 30_000


def chromium_path() -> str:
    """Debian's chromium, or a skip saying how to get it (`.ci/run` installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no chromium: apt-get install chromium (.ci/run does)")
    return found


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """Headless Debian chromium; background networking off (only the page's requests count)."""
    path = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=path,
            headless=True,
            args=["--disable-background-networking", "--disable-component-update"],
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def behind_gateway(shop: RunningPlatform, workdir: Path) -> Iterator[str]:
    """The distributed mode's front, with `shop` as every service's one replica: the companion
    (`mercato serve gateway`) and nginx rendered from `mercato.gateway`'s routes, each on a port
    held here and handed over. Yields nginx's base URL."""
    nginx = need("nginx")
    workdir.mkdir(parents=True)
    replica = shop.base_url.removeprefix("http://")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
    env[UPSTREAMS_ENV] = json.dumps({service: [replica] for service in ROUTES})
    children = Processes(workdir)
    reserved = ReservedPort()
    proxy: subprocess.Popen[bytes] | None = None
    try:
        companion = children.spawn("gateway", mercato("serve", GATEWAY), env, "/health")
        upstreams = {service: [replica] for service in ROUTES}
        upstreams[GATEWAY] = [companion.removeprefix("http://")]
        listen = f"127.0.0.1:{reserved.port}"
        proxy = start_nginx(nginx, workdir, render_nginx(upstreams, listen=listen), reserved)
        base = f"http://{listen}"
        wait_for(f"{base}/ready", proxy, workdir / "nginx.log", 60)
        yield base
    finally:
        if proxy is not None:
            stop(proxy)
        children.close()
        reserved.close()


@dataclass
class Guard:
    """What a page did that it must not: requests to other hosts, errors, CSP violations."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def route(self, route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or f"{parts.scheme}://{parts.netloc}" == self.origin:
            route.continue_()
            return
        self.foreign.append(url)
        route.abort()

    def console(self, message: Any) -> None:
        text = message.text
        if "Content Security Policy" in text or "Refused to" in text:
            self.problems.append(f"CSP: {text}")
        elif message.type == "error" and "status of 40" not in text and "status of 50" not in text:
            # An answer of 4xx/5xx is logged by Chromium as an error; the page shows those.
            self.problems.append(f"console error: {text}")

    def check(self) -> None:
        assert self.foreign == [], f"requests left for other hosts: {self.foreign}"
        assert self.problems == [], self.problems


def sign_in(page: Any, base: str, who: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    """Open the console at `base` and sign in through its form; as the admin, until the
    overview shows."""
    page.goto(f"{base}/console")
    page.fill("input[name=username]", who)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    if who == "admin":
        page.locator("[data-service=orders]").wait_for()


def has_endpoint(shop: RunningPlatform, headers: dict[str, str], path: str) -> bool:
    """Whether the server has a route for `path` (a 404 naming no route means it does not)."""
    with shop.client() as client:
        answer = client.get(path, headers=headers)
    return not (answer.status_code == 404 and answer.json().get("detail") == "Not Found")


def poll(check: Callable[[], Any], what: str) -> Any:
    """`until` with the console's pace."""
    return until(check, what, timeout=WAIT_MS / 1000)


def poison(shop: RunningPlatform, consumer: str) -> str:
    """A dead letter as a consumer leaves one when it gives up: the envelope of an event it
    already applied (catalog's first `product.upserted`), so a replay is harmless, and the error
    of its last try. Written into the consumer's database as the backbone writes it."""

    def engine(service: str) -> Any:
        return create_engine(f"sqlite:///{shop.data_dir / f'{service}.db'}")

    with engine("catalog").connect() as conn:
        row = conn.execute(
            select(outbox).where(outbox.c.event_type == "product.upserted").limit(1)
        ).one()
    letter = new_id_str()
    with engine(consumer).begin() as conn:
        conn.execute(
            insert(dead_letters).values(
                id=letter,
                consumer=consumer,
                event_id=row.event_id,
                event_type=row.event_type,
                envelope=row.envelope,
                error="RuntimeError: poisoned by test_console",
                attempts=5,
                failed_at=utcnow(),
            )
        )
    return letter
