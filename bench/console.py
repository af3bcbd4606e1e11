"""The web console's weight and speed, in headless Debian chromium against `mercato run`.

    python bench/console.py [--reloads 5]

First load: every request a fresh browser (empty cache) makes to show `/console`'s sign-in page,
their number and bytes (as sent, gzip where the browser asked for it, and decoded). Time to
interactive: from pressing "Sign in" (cold: nothing cached) and from reloading `/console` while
signed in (warm), until the overview shows every service and has finished its first refresh.
Aims: first load at most 500 KB, overview interactive within 1 s. Prints figures next to the aims;
never fails on time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import start_platform, stop_platform  # noqa: E402

ADMIN_PASSWORD = "Admin-Pass-1234"
AIM_BYTES = 500 * 1024
AIM_SECONDS = 1.0
SERVICES = ("accounts", "identity", "catalog", "wallet", "orders", "integration")


def overview_ready(page: Any) -> None:
    """Wait until every service's card is shown and the first refresh has finished."""
    for service in SERVICES:
        page.locator(f"[data-service={service}]").wait_for(timeout=30_000)
    page.locator("[data-testid=status-line]", has_text="Updated").wait_for(timeout=30_000)


def measure(base_url: str, chromium: str, reloads: int) -> None:
    """Print the first load's weight and the overview's time to interactive."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_context().new_page()
        responses: list[Any] = []
        page.on("response", lambda response: responses.append(response))
        page.goto(f"{base_url}/console", wait_until="networkidle")
        page.locator("[data-testid=signin]").wait_for()
        sent = decoded = 0
        for response in responses:
            sizes = response.request.sizes()
            sent += sizes["responseBodySize"] + sizes["responseHeadersSize"]
            decoded += len(response.body())
        print(
            f"first load      {len(responses)} requests, {sent / 1024:.1f} KB transferred "
            f"({decoded / 1024:.1f} KB decoded)   aim <= {AIM_BYTES // 1024} KB"
            f"{'' if sent <= AIM_BYTES else '   OVER THE AIM'}"
        )

        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", ADMIN_PASSWORD)
        started = time.perf_counter()
        with page.expect_response("**/api/v1/auth/login") as login:
            page.click("button[type=submit]")
        overview_ready(page)
        cold = time.perf_counter() - started
        # The login checks an argon2 password hash, slow by design: said apart from the page.
        hashing = login.value.request.timing["responseEnd"] / 1000

        warm = []
        for _ in range(reloads):
            started = time.perf_counter()
            page.reload()
            overview_ready(page)
            warm.append(time.perf_counter() - started)
        median = statistics.median(warm)
        print(
            f"overview TTI    sign-in to overview {cold:.2f} s (the login answer {hashing:.2f} s "
            f"of it); signed-in reload median "
            f"{median:.2f} s (best {min(warm):.2f} s, {reloads} reloads)   aim <= {AIM_SECONDS:g} s"
            f"{'' if max(cold, median) <= AIM_SECONDS else '   OVER THE AIM'}"
        )
        browser.close()


def main() -> None:
    """Start a platform, measure, stop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=5)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("bench/console.py: no chromium (apt-get install chromium); nothing measured")
        return
    with tempfile.TemporaryDirectory(prefix="mercato-console-bench-") as workdir:
        running = start_platform(
            Path(workdir) / "data", extra_env={"MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD}
        )
        try:
            measure(running.base_url, chromium, args.reloads)
        finally:
            stop_platform(running)


if __name__ == "__main__":
    main()
