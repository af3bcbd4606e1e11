"""The web console (`/console`) driven in headless Chromium against `mercato run`.

Debian's `chromium` (installed by `.ci/run`) is driven by the PyPI `playwright` package through
`executable_path`: nothing downloads a browser. Every request the page makes goes through a
route that lets only the platform's own origin through and records anything else, so each test
also proves the console works with the network to anything but the platform cut off. Each page
is saved as a screenshot under the test run's tmp dir (`console-screens*/`).

Two steps depend on endpoints of issue 13's server side (the event log and the order timeline):
they check the feature when the server has it and the "not available on this server" notice
when it does not (`has_endpoint`), so the same test runs before and after both are merged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.api import PASSWORD, register
from tests.e2e.conftest import RunningPlatform, login, start_platform, stop_platform
from tests.e2e.console_browser import (
    ADMIN_PASSWORD,
    WAIT_MS,
    Guard,
    has_endpoint,
    launched_chromium,
    poison,
    poll,
    sign_in,
)

sync_api = pytest.importorskip("playwright.sync_api")

SERVICES = ("accounts", "identity", "catalog", "wallet", "orders", "integration")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """One `mercato run` for the module (the console's tests only read and add)."""
    running = start_platform(
        tmp_path_factory.mktemp("console") / "data",
        extra_env={"MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD},
    )
    yield running
    stop_platform(running)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian chromium for the module."""
    with launched_chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the pages' screenshots go."""
    return tmp_path_factory.mktemp("console-screens")


@pytest.fixture
def page(
    browser: Any, shop: RunningPlatform, screens: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage) whose every request is guarded; how it ended is
    saved as `<test>-end.png` (a failing wait shows what the page showed instead)."""
    guard = Guard(shop.base_url)
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    context.route("**/*", guard.route)
    tab = context.new_page()
    tab.on("console", guard.console)
    tab.on("pageerror", lambda error: guard.problems.append(f"page error: {error}"))
    tab.on("dialog", lambda dialog: dialog.accept())
    tab.set_default_timeout(WAIT_MS)
    yield tab
    tab.screenshot(path=screens / f"{request.node.name}-end.png", full_page=True)
    context.close()
    guard.check()


@pytest.fixture(scope="module")
def boss(shop: RunningPlatform) -> dict[str, str]:
    """The admin's headers for the API calls the tests make themselves."""
    with shop.client() as client:
        return login(client, "admin", ADMIN_PASSWORD)


def test_the_console_is_served_with_a_strict_policy(shop: RunningPlatform) -> None:
    # `mercato run` (with or without --demo) names it in its banner.
    assert f"console    {shop.base_url}/console" in shop.log()
    with shop.client() as client:
        answer = client.get("/console")
        assert answer.status_code == 200
        policy = answer.headers["content-security-policy"]
        for directive in (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ):
            assert directive in policy
        assert "unsafe-inline" not in policy
        assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", answer.text) is None  # no inline script
        assert client.get("/console/app.js").headers["content-type"].startswith("text/javascript")


def test_admin_signs_in_and_the_overview_shows_every_service(
    page: Any, shop: RunningPlatform, screens: Path
) -> None:
    sign_in(page, shop.base_url)
    for service in SERVICES:
        card = page.locator(f"[data-service={service}]")
        card.wait_for()
        assert card.get_attribute("data-health") != "bad", card.inner_text()
    page.locator("[data-testid=orders-last-hour] [data-status=completed]").wait_for()
    assert "export-products" in page.inner_text("main")
    page.screenshot(path=screens / "overview.png", full_page=True)


def test_every_page_works_with_nothing_but_the_platform_reachable(
    page: Any, shop: RunningPlatform, boss: dict[str, str], screens: Path
) -> None:
    sign_in(page, shop.base_url)
    expected = {
        "orders": "[data-testid=orders-list] p",
        "events": "[data-testid=dead-letters] p, [data-testid=dead-letters] table",
        "jobs": "[data-testid=jobs] table",
        "integration": "[data-testid=upstreams] table, [data-testid=upstreams] p",
        "identity": "[data-testid=accounts] table",
        "catalog": "[data-testid=sync] p",
        "eventtypes": "[data-event-type='order.placed']",
    }
    for name, ready in expected.items():
        page.click(f"header nav a[data-page={name}]")
        page.locator(ready).first.wait_for()
        assert page.locator("main").get_attribute("data-page") == name
        if name == "events":
            if has_endpoint(shop, boss, "/api/v1/events/orders/events"):
                page.locator(
                    "[data-testid=events-list] table, [data-testid=events-list] p"
                ).first.wait_for()
                assert page.locator("[data-testid=not-available]").count() == 0
            else:
                page.locator("[data-testid=not-available]").wait_for()
        if name == "eventtypes":  # from /asyncapi.json: producer, consumers, payload fields
            placed = page.locator("[data-event-type='order.placed']")
            placed.locator("summary").click()
            text = placed.inner_text()
            assert "from orders to" in text and "wallet" in text and "order_id" in text
        page.screenshot(path=screens / f"{name}.png", full_page=True)
    assert page.locator("[data-testid=status-line]").inner_text().startswith("Updated")


def test_an_order_placed_through_the_api_is_found_with_its_saga(
    page: Any, shop: RunningPlatform, boss: dict[str, str], screens: Path
) -> None:
    with shop.client() as client:
        shopper_name, shopper = register(client, "shopper")
        product = client.post(
            "/api/v1/products",
            headers=boss,
            json={"name": "Console Book", "price": "12.50", "stock": 5},
        ).json()
        poll(
            lambda: (
                client.post(
                    "/api/v1/wallet/topup",
                    headers=boss,
                    json={"amount": "100.00", "user_id": shopper["id"]},
                ).status_code
                == 200
            ),
            "the shopper's wallet",
        )
        own = login(client, shopper_name, PASSWORD)

        def place() -> dict[str, Any] | None:
            answer = client.post(
                "/api/v1/orders",
                headers=own,
                json={"items": [{"product_id": product["id"], "quantity": 2}]},
            )
            return answer.json() if answer.status_code == 202 else None

        order = poll(place, "an order orders' replica can price")
    sign_in(page, shop.base_url)
    page.click("header nav a[data-page=orders]")
    page.locator(f"[data-order='{order['id']}']").click()
    page.locator("[data-testid=order-id]", has_text=order["id"]).wait_for()
    page.locator("[data-testid=order-status]", has_text="completed").wait_for()
    if has_endpoint(shop, boss, f"/api/v1/orders/{order['id']}/timeline"):
        timeline = page.locator("[data-testid=timeline]")
        timeline.locator("td", has_text="order.completed").wait_for()
        text = timeline.inner_text()
        for kind in ("order.placed", "payment.debited", "stock.reserved", "order.completed"):
            assert kind in text
    else:
        page.locator("[data-testid=order-detail] [data-testid=not-available]").wait_for()
    page.screenshot(path=screens / "order.png", full_page=True)

    # Found by its owner's username, not only by id.
    page.fill("input[name=user_id]", shopper_name)
    page.click("[data-testid=orders-search] button[type=submit]")
    page.locator("[data-testid=orders-list] p", has_text="1 order,").wait_for()
    page.locator(f"[data-order='{order['id']}']").wait_for()
    page.fill("input[name=user_id]", "")

    # Stuck sagas (the overview links there): nothing of this shop has been pending a minute.
    page.evaluate("location.hash = '#/orders/pending-over/60'")
    older = page.locator("input[name=pending_over]")
    poll(lambda: older.input_value() == "60", "the bound from the link")
    page.locator("[data-testid=orders-list] p", has_text="0 pending longer than 60 s").wait_for()

    # From the saga to the events of its correlation (with the event log and the timeline).
    log = "/api/v1/events/orders/events"
    if has_endpoint(shop, boss, log) and page.locator("[data-testid=timeline] a").count():
        link = page.locator("[data-testid=timeline] a").first
        correlation = link.inner_text()
        link.click()
        page.locator("[data-testid=events-list] td", has_text="order.completed").wait_for()
        assert page.locator("input[name=correlation_id]").input_value() == correlation
        page.screenshot(path=screens / "events-of-an-order.png", full_page=True)


def test_the_export_job_runs_and_its_file_downloads(
    page: Any, shop: RunningPlatform, screens: Path
) -> None:
    sign_in(page, shop.base_url)
    page.click("header nav a[data-page=jobs]")
    before = page.locator("[data-testid=exports-table] [data-testid=download]").count()
    page.click("[data-testid=run-export-products]")
    page.locator("[data-testid=job-history]", has_text="export-products").wait_for()
    download_buttons = page.locator("[data-testid=exports-table] [data-testid=download]")
    poll(lambda: download_buttons.count() > before, "the export file listed")
    with page.expect_download() as started:
        download_buttons.first.click()
    saved = Path(started.value.path())
    assert re.fullmatch(r"products_\d{8}_\d{6}\.csv", started.value.suggested_filename)
    assert saved.read_text().startswith("Product ID,Product Name,")
    page.screenshot(path=screens / "jobs.png", full_page=True)


def test_a_machine_client_secret_is_shown_once(
    page: Any, shop: RunningPlatform, screens: Path
) -> None:
    sign_in(page, shop.base_url)
    page.click("header nav a[data-page=identity]")
    page.fill("input[name=client_name]", "console reporter")
    page.fill("input[name=client_id]", "console-reporter")
    page.click("[data-testid=client-form] button[type=submit]")
    secret = page.locator("[data-testid=client-secret]").inner_text().strip()
    assert len(secret) >= 32
    page.locator("[data-client=console-reporter]").wait_for()
    page.screenshot(path=screens / "identity.png", full_page=True)
    # The secret works...
    with shop.client() as client:
        token = client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=("console-reporter", secret),
        )
    assert token.status_code == 200, token.text
    # ...and is nowhere after a reload, not in the page nor in what the tab keeps.
    page.reload()
    page.locator("[data-client=console-reporter]").wait_for()
    assert page.locator("[data-testid=client-secret]").count() == 0
    assert secret not in page.content()
    assert secret not in page.evaluate("JSON.stringify(sessionStorage)")

    # A person disabled from the page cannot log in; enabled again, they can.
    with shop.client() as client:
        person, _ = register(client, "disabled")
        login(client, person, PASSWORD)  # identity knows them now
        page.reload()
        page.click(f"[data-testid='disable-{person}']")
        page.locator("p[role=status]", has_text=f"{person}: disabled").wait_for()
        page.locator(f"[data-testid='enable-{person}']").wait_for()

        def refused() -> int | None:
            answer = client.post(
                "/api/v1/auth/login", json={"username_or_email": person, "password": PASSWORD}
            )
            assert answer.status_code != 200, "a disabled person got a token"
            # 503: identity has not applied the change yet, try again.
            return None if answer.status_code == 503 else answer.status_code

        assert poll(refused, f"{person}'s login refused") in (401, 403)
        page.click(f"[data-testid='enable-{person}']")
        page.locator("p[role=status]", has_text=f"{person}: enabled again").wait_for()
        assert login(client, person, PASSWORD)


def test_a_person_without_the_admin_role_is_refused(
    page: Any, shop: RunningPlatform, screens: Path
) -> None:
    with shop.client() as client:
        visitor, _ = register(client, "visitor")
        login(client, visitor, PASSWORD)  # identity knows them now
    sign_in(page, shop.base_url, visitor, PASSWORD)
    refusal = page.locator("[data-testid=refusal]")
    refusal.wait_for()
    assert "no admin role" in refusal.inner_text()
    assert page.locator("header.top").count() == 0
    # The session opened to find out was ended, not kept.
    assert page.evaluate("sessionStorage.length") == 0
    page.screenshot(path=screens / "refused.png")


def test_the_session_is_renewed_before_expiry_and_sign_out_revokes_it(
    page: Any, shop: RunningPlatform
) -> None:
    sign_in(page, shop.base_url)
    first = page.evaluate("JSON.parse(sessionStorage.getItem('mercato.console.session'))")
    # Due for renewal: the next request renews first (as the timer would, a minute before expiry).
    page.evaluate(
        "(() => { const s = JSON.parse(sessionStorage.getItem('mercato.console.session'));"
        " s.renewAt = 0; sessionStorage.setItem('mercato.console.session', JSON.stringify(s)); })()"
    )
    page.reload()
    page.locator("[data-service=orders]").wait_for()

    def renewed() -> dict[str, Any] | None:
        now = page.evaluate("JSON.parse(sessionStorage.getItem('mercato.console.session'))")
        return now if now and now["refresh"] != first["refresh"] else None

    second = poll(renewed, "the session renewed")
    assert second["access"] != first["access"]
    page.click("[data-testid=signout]")
    page.locator("[data-testid=signin]", has_text="Signed out").wait_for()
    with shop.client() as client:
        me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {second['access']}"})
        assert me.status_code == 401
        spent = client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh"]})
        assert spent.status_code in (400, 401)


def test_a_dead_letter_stands_out_and_a_replay_clears_it(
    page: Any, shop: RunningPlatform, boss: dict[str, str], screens: Path
) -> None:
    with shop.client() as client:
        made = client.post(
            "/api/v1/products", headers=boss, json={"name": "Poison Pill", "price": "1.00"}
        )
        assert made.status_code == 201, made.text
    poison(shop, "orders")
    sign_in(page, shop.base_url)
    orders_card = page.locator("[data-service=orders]")
    poll(lambda: orders_card.get_attribute("data-health") == "bad", "orders marked unhealthy")
    assert "dead letters" in orders_card.inner_text()
    page.screenshot(path=screens / "overview-dead-letter.png", full_page=True)
    page.goto(f"{shop.base_url}/console#/events/orders")
    letters = page.locator("[data-testid=dead-letters]")
    letters.locator("td", has_text="poisoned by test_console").wait_for()
    page.screenshot(path=screens / "events-dead-letter.png", full_page=True)
    letters.locator("[data-testid=replay]").first.click()
    letters.locator("p", has_text="no dead letter in orders").wait_for()
    with shop.client() as client:
        stats = client.get("/api/v1/events/orders/stats", headers=boss).json()
    assert stats["dead_letters"] == 0


def test_a_product_is_edited_and_a_token_forgotten_after_the_budget_warning(
    page: Any, shop: RunningPlatform, boss: dict[str, str], screens: Path
) -> None:
    with shop.client() as client:
        made = client.post(
            "/api/v1/products",
            headers=boss,
            json={"name": "Editable Atlas", "price": "30.00", "stock": 3},
        ).json()
    sign_in(page, shop.base_url)
    page.click("header nav a[data-page=catalog]")
    page.fill("input[name=q]", "Editable Atlas")
    page.click("[data-testid=products] >> xpath=.. >> button[type=submit]")
    page.locator(f"[data-product='{made['id']}']").click()
    editor = page.locator("[data-testid=product-editor]")
    editor.locator("input[name=price]").fill("27.50")
    editor.locator("input[name=stock]").fill("9")
    editor.locator("input[name=active]").uncheck()
    editor.locator("button[type=submit]").click()
    page.locator(
        "p[role=status]", has_text="Editable Atlas: price 27.50, stock 9, withdrawn"
    ).wait_for()
    page.screenshot(path=screens / "catalog-edit.png", full_page=True)
    with shop.client() as client:
        product = client.get(f"/api/v1/products/{made['id']}").json()
    assert (product["price"], product["stock"], product["active"]) == ("27.50", 9, False)

    # The export job's upstream is identity: its budget is shown, and said before forgetting.
    warnings: list[str] = []
    page.on("dialog", lambda dialog: warnings.append(dialog.message))
    page.click("header nav a[data-page=integration]")
    page.click("[data-testid=forget-identity]")
    page.locator("p[role=status]", has_text="identity: cached token forgotten").wait_for()
    assert warnings and re.search(r"identity: \d+ of \d+ token requests remain", warnings[0])
    with shop.client() as client:
        status = client.get("/api/v1/integration/token/status", headers=boss).json()
    assert status["identity"]["has_token"] is False
    page.screenshot(path=screens / "integration.png", full_page=True)
