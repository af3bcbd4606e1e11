"""What a service hands the platform, and what the platform hands each service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from mercato.platform.db import Database
from mercato.platform.events.envelope import Envelope
from mercato.platform.migrations import MigrationHistory
from mercato.platform.settings import Settings
from mercato.platform.uow import UnitOfWork

if TYPE_CHECKING:
    from mercato.platform.auth import RevocationStore
    from mercato.platform.auth.deps import Authenticator
    from mercato.platform.auth.keysource import JwksProvider

BackgroundTask = Callable[[asyncio.Event], Awaitable[None]]
# An event handler of a service: applies one event inside the consumer's unit of work.
ServiceHandler = Callable[["ServiceContext", Envelope, UnitOfWork], Awaitable[None]]


@dataclass
class SharedState:
    """Process-wide things services share without importing each other.

    `local_jwks` is filled by identity when it runs in this process, so tokens are verified
    against its keys without a network hop (sync or async: it is read again when a token names
    an unknown kid, which lets identity reload keys another replica rotated); `extras` lets a
    service publish a typed handle that others look up only through their `contracts` (for
    example the exporter's credentials).
    """

    revocations: RevocationStore
    redis: Any | None = None
    local_jwks: JwksProvider | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class ServiceContext:
    """Everything one service needs at run time, built by the platform."""

    name: str
    settings: Settings
    database: Database
    shared: SharedState
    auth: Authenticator
    wake_relay: Callable[[], None] = lambda: None
    redeliver: Callable[[str, Any], Awaitable[None]] | None = None
    role: str = "embedded"  # "embedded", "api" (serve) or "worker"

    def uow(self) -> UnitOfWork:
        """A new unit of work on this service's database."""
        return UnitOfWork(self.database, self.name, self.wake_relay)


@dataclass(frozen=True)
class ServiceModule:
    """A service as the platform composes it: router, consumers, migrations and hooks."""

    name: str
    migrations: MigrationHistory | None = None
    router: Callable[[ServiceContext], APIRouter] | None = None
    # Static, so the broker topology of every consumer is known without running it.
    handlers: Mapping[str, ServiceHandler] = field(default_factory=dict)
    # Runs once at start-up after migrations (bootstrap data, shared-state registration).
    on_start: Callable[[ServiceContext], Awaitable[None]] | None = None
    # Long-running loops (schedulers and the like), run by the worker or the embedded process.
    background: Callable[[ServiceContext], Sequence[BackgroundTask]] | None = None
    # Runs at shutdown, before the database is closed.
    on_stop: Callable[[ServiceContext], Awaitable[None]] | None = None
    # Runs before `/metrics` answers, to set gauges of state the service keeps elsewhere.
    on_scrape: Callable[[ServiceContext], Awaitable[None]] | None = None
