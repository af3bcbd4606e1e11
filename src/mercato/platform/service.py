"""What a service hands the platform, and what the platform hands each service."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from fastapi import APIRouter
from typing_extensions import TypeVar as DefaultTypeVar

from mercato.platform.db import Database
from mercato.platform.events.envelope import Envelope, EventPayload
from mercato.platform.events.transport import Handler
from mercato.platform.migrations import MigrationHistory
from mercato.platform.settings import Settings
from mercato.platform.uow import UnitOfWork

if TYPE_CHECKING:
    from mercato.platform.auth import RevocationStore
    from mercato.platform.auth.deps import Authenticator
    from mercato.platform.auth.keysource import JwksProvider

BackgroundTask = Callable[[asyncio.Event], Awaitable[None]]
# A service's dependencies, built once per process (`ServiceModule.dependencies`); None for a
# service whose use cases need only their unit of work.
D = DefaultTypeVar("D", default=None)
T = TypeVar("T")
# A use case applying one event: `(uow, payload)`, plus the keyword arguments it names among
# `envelope` (the event's metadata) and `deps` (the service's dependencies); see `bind_handlers`.
EventHandler = Callable[..., Awaitable[object]]


class Handovers:
    """Typed handles one service hands another in this process, one per class.

    The class is declared in the `contracts` of the service that provides or receives it, so
    both sides name it and import-linter sees the dependency (no string keys, no `Any`).
    """

    def __init__(self) -> None:
        self._handles: dict[type[Any], object] = {}

    def of(self, kind: type[T]) -> T:
        """This process's handle of `kind`, made with `kind()` on first use."""
        found = self._handles.get(kind)
        if found is None:
            found = self._handles[kind] = kind()
        return cast(T, found)


@dataclass
class SharedState:
    """Process-wide things services share without importing each other.

    `local_jwks` is filled by identity when it runs in this process, so tokens are verified
    against its keys without a network hop (sync or async: it is read again when a token names
    an unknown kid, which lets identity reload keys another replica rotated); `handovers` carries
    what one service hands another in-process (for example the exporter's credentials).
    """

    revocations: RevocationStore
    redis: Any | None = None
    local_jwks: JwksProvider | None = None
    handovers: Handovers = field(default_factory=Handovers)


@dataclass
class ServiceContext(Generic[D]):
    """Everything one service needs at run time, built by the platform."""

    name: str
    settings: Settings
    database: Database
    shared: SharedState
    auth: Authenticator
    wake_relay: Callable[[], None] = lambda: None
    redeliver: Callable[[str, Any], Awaitable[None]] | None = None
    role: str = "embedded"  # "embedded", "api" (serve) or "worker"
    # Builds the service's own dependencies (`ServiceModule.dependencies`); see `deps`.
    make_deps: Callable[[], D] = field(kw_only=True, repr=False)
    _built: list[D] = field(default_factory=list, init=False, repr=False)

    @property
    def deps(self) -> D:
        """The service's own dependencies, built once per process on first use (so commands
        that only read the event tables never build, nor need the secrets of, a keyring)."""
        if not self._built:
            self._built.append(self.make_deps())
        return self._built[0]

    def uow(self) -> UnitOfWork:
        """A new unit of work on this service's database."""
        return UnitOfWork(self.database, self.name, self.wake_relay)


@dataclass(frozen=True)
class ServiceModule(Generic[D]):
    """A service as the platform composes it: its dependencies, router, event handlers,
    migrations and hooks, declared in one place (the service's `module.py`)."""

    name: str
    migrations: MigrationHistory | None = None
    # Builds the service's dependencies (its settings, stores, clients), once per process:
    # every hook, router and handler of it is handed the same ones as `ctx.deps`.
    dependencies: Callable[[ServiceContext[None]], D] | None = None
    router: Callable[[ServiceContext[D]], APIRouter] | None = None
    # The use case applying each payload type. Static, so the broker topology of every
    # consumer is known without running it.
    handlers: Mapping[type[EventPayload], EventHandler] = field(default_factory=dict)
    # Runs once at start-up after migrations (bootstrap data, handovers to other services).
    on_start: Callable[[ServiceContext[D]], Awaitable[None]] | None = None
    # Long-running loops (schedulers and the like), run by the worker or the embedded process.
    background: Callable[[ServiceContext[D]], Sequence[BackgroundTask]] | None = None
    # Runs at shutdown, before the database is closed.
    on_stop: Callable[[ServiceContext[D]], Awaitable[None]] | None = None
    # Runs before `/metrics` answers, to set gauges of state the service keeps elsewhere.
    on_scrape: Callable[[ServiceContext[D]], Awaitable[None]] | None = None

    @property
    def event_types(self) -> list[str]:
        """The names of the event types this service consumes (what transports route)."""
        return [payload.event_type for payload in self.handlers]


def bind_handlers(
    handlers: Mapping[type[EventPayload], EventHandler], ctx: ServiceContext[Any]
) -> dict[str, Handler]:
    """The consumer's handlers by event type name: each parses the envelope's `data` into its
    payload model and calls the use case with the unit of work, the payload and, when it names
    them as keyword parameters, `envelope=` (the event's metadata) and `deps=` (`ctx.deps`)."""
    return {
        payload.event_type: _bound(payload, handler, ctx) for payload, handler in handlers.items()
    }


def _bound(payload: type[EventPayload], handler: EventHandler, ctx: ServiceContext[Any]) -> Handler:
    # Looked at once here, not per event.
    wanted = inspect.signature(handler).parameters
    with_envelope, with_deps = "envelope" in wanted, "deps" in wanted

    async def apply(envelope: Envelope, uow: UnitOfWork) -> None:
        named: dict[str, object] = {}
        if with_envelope:
            named["envelope"] = envelope
        if with_deps:
            named["deps"] = ctx.deps
        await handler(uow, envelope.payload(payload), **named)

    return apply
