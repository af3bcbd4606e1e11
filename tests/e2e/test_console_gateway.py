"""The console through the distributed mode's front: nginx rendered from `mercato.gateway`'s
routes, with the companion (`mercato serve gateway`) serving `/console`, `/ready` and the docs,
and every service's paths sent to its replicas. One `mercato run` stands in for every service's
one replica (no PostgreSQL, Redis or broker needed): what is checked is that the page, whose
only way in is the public API, works the same through the gateway as on one process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import start_platform, stop_platform
from tests.e2e.console_browser import (
    ADMIN_PASSWORD,
    WAIT_MS,
    Guard,
    behind_gateway,
    launched_chromium,
    sign_in,
)

pytest.importorskip("playwright.sync_api")

SERVICES = ("accounts", "identity", "catalog", "wallet", "orders", "integration")


def test_the_console_works_the_same_through_the_gateway(tmp_path: Path) -> None:
    shop = start_platform(tmp_path / "data", extra_env={"MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD})
    try:
        with behind_gateway(shop, tmp_path / "gateway") as base, launched_chromium() as browser:
            guard = Guard(base)
            context = browser.new_context(viewport={"width": 1360, "height": 900})
            context.route("**/*", guard.route)
            page = context.new_page()
            page.on("console", guard.console)
            page.on("pageerror", lambda error: guard.problems.append(f"page error: {error}"))
            page.set_default_timeout(WAIT_MS)
            sign_in(page, base)
            replica = shop.base_url.removeprefix("http://")
            for service in SERVICES:
                card = page.locator(f"[data-service={service}]")
                card.wait_for()
                # The gateway's /ready names each replica; every one answered.
                assert replica in card.inner_text()
                assert card.get_attribute("data-health") != "bad", card.inner_text()
            page.screenshot(path=tmp_path / "overview-through-the-gateway.png", full_page=True)
            for name, ready in {
                "jobs": "[data-testid=jobs] table",
                "identity": "[data-testid=accounts] table",
                "eventtypes": "[data-event-type='order.placed']",
            }.items():
                page.click(f"header nav a[data-page={name}]")
                page.locator(ready).first.wait_for()
            context.close()
            guard.check()
    finally:
        stop_platform(shop)
