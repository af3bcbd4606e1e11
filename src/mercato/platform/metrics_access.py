"""Who may read `/metrics`, and the database-state gauges it refreshes when scraped.

A scraper on an allowed network (`MERCATO_METRICS_ALLOW`, CIDRs; loopback by default) reads it
without a token; anyone else needs an admin's token or a machine's with `mercato.admin` (401
without one, 403 with another). The client's address is the one the trusted-proxies logic
settled on (`mercato.platform.net`), so a client cannot claim an allowed address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

import structlog
from starlette.requests import Request

from mercato.platform.auth import Principal
from mercato.platform.db import Database
from mercato.platform.errors import Forbidden, Unauthorized
from mercato.platform.events.admin import event_stats
from mercato.platform.metrics import event_gauges
from mercato.platform.net import client_address

log = structlog.get_logger("mercato.metrics")

MetricsGuard = Callable[[Request], Awaitable[None]]
Authenticate = Callable[[Request], Awaitable[Principal | None]]


def metrics_guard(allow: Iterable[str], authenticate: Authenticate) -> MetricsGuard:
    """A check run before `/metrics` answers: an allowed address, or an admin's token."""
    networks = [ipaddress.ip_network(network) for network in allow]

    async def guard(request: Request) -> None:
        if _allowed(client_address(request), networks):
            return
        principal = await authenticate(request)
        if principal is None:
            raise Unauthorized("metrics need an admin's token from this address")
        if not principal.is_admin:
            raise Forbidden("admin rights required to read metrics")

    return guard


def _allowed(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # "unknown", or a test client's name
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def scrape_refresher(
    databases: Mapping[str, Database], hooks: Sequence[Callable[[], Awaitable[None]]] = ()
) -> Callable[[], Awaitable[None]]:
    """Sets every service's outbox backlog, oldest age and dead letters (a few cheap counts per
    database, once per scrape rather than once per event), then runs the services' own
    scrape hooks (`ServiceModule.on_scrape`)."""

    async def refresh() -> None:
        for hook in hooks:
            try:
                await hook()
            except Exception as exc:  # a gauge left stale beats a scrape that fails
                log.warning("metrics: scrape hook failed", error=repr(exc))
        for service, database in databases.items():
            try:
                stats = await event_stats(database)
            except Exception as exc:  # a database that is down must not hide the rest
                log.warning("metrics: event stats failed", service=service, error=repr(exc))
                continue
            event_gauges(
                service, stats.outbox_backlog, stats.oldest_unsent_age_seconds, stats.dead_letters
            )

    return refresh
