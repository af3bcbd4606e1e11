"""What the console's browser tests (test_console.py) share: the browser, a guard on every
request a page makes, signing in through the form, and a dead letter made as the backbone
makes one."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, insert, select

from mercato.platform.clock import utcnow
from mercato.platform.events.tables import dead_letters, outbox
from mercato.platform.ids import new_id_str
from tests.e2e.conftest import RunningPlatform, until

ADMIN_PASSWORD = "Admin-Pass-1234"
# The console refreshes a page every 5 s; a wait covers a few of those.
WAIT_MS = 30_000


def chromium_path() -> str:
    """Debian's chromium, or a skip saying how to get it (`.ci/run` installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no chromium: apt-get install chromium (.ci/run does)")
    return found


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


def sign_in(
    page: Any, shop: RunningPlatform, who: str = "admin", password: str = ADMIN_PASSWORD
) -> None:
    """Open the console and sign in through its form; as the admin, until the overview shows."""
    page.goto(f"{shop.base_url}/console")
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
