"""Composing services into a running process: databases, transport, relays, consumers, HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Literal

import httpx
import structlog
from fastapi import FastAPI

from mercato.platform.aio import wait_any
from mercato.platform.auth import (
    Authenticator,
    MemoryRevocationStore,
    RedisRevocationStore,
    RevocationStore,
    TokenVerifier,
)
from mercato.platform.auth_keys import PlatformKeySource
from mercato.platform.db import Database
from mercato.platform.events.api import events_router
from mercato.platform.events.consumer import EventConsumer
from mercato.platform.events.envelope import Envelope
from mercato.platform.events.inprocess import InProcessQueue, InProcessTransport, ParkedQueue
from mercato.platform.events.relay import OutboxRelay
from mercato.platform.events.transport import Subscription, Transport
from mercato.platform.migrations import upgrade
from mercato.platform.service import BackgroundTask, ServiceContext, ServiceModule, SharedState
from mercato.platform.settings import Settings
from mercato.platform.web import create_base_app

log = structlog.get_logger("mercato.runtime")

Role = Literal["embedded", "api", "worker"]


class Platform:
    """The services of one process and the machinery between them.

    `embedded` runs everything (HTTP, relays, consumers, schedulers) in one process; `api` serves
    HTTP only; `worker` runs relays, consumers and background loops without HTTP.
    """

    def __init__(
        self,
        settings: Settings,
        modules: Sequence[ServiceModule],
        *,
        role: Role = "embedded",
        migrate_on_start: bool = True,
        topology: Sequence[ServiceModule] = (),
    ) -> None:
        if role != "embedded" and not settings.redis_url:
            # Replicas agree on revocations, client token budgets and cached upstream tokens
            # through Redis (login throttles are in identity's database); each with a store of
            # its own would accept a token another one revoked.
            raise ConfigurationError(
                "distributed mode (mercato serve / mercato worker) needs MERCATO_REDIS_URL: "
                "revocations, token budgets and cached tokens are shared there"
            )
        self.settings = settings
        self.modules = list(modules)
        # Every consumer of the installation, run here or not: declared on the broker at start.
        self.topology = list(topology) or self.modules
        self.role = role
        self.migrate_on_start = migrate_on_start
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        redis_client = _redis_client(settings)
        revocations: RevocationStore = (
            RedisRevocationStore(redis_client, f"{settings.redis_prefix}:revoked")
            if redis_client is not None
            else MemoryRevocationStore()
        )
        self.shared = SharedState(revocations=revocations, redis=redis_client)
        self.transport: Transport = self._make_transport()
        # Without identity in this process, its JWKS is fetched from MERCATO_IDENTITY_URL, else
        # from the issuer (the public URL identity is reached at, which serves the JWKS too).
        keys = PlatformKeySource(self.shared, settings.identity_url or settings.issuer, self._http)
        self.verifier = TokenVerifier(
            keys, revocations, issuer=settings.issuer, audience=settings.audience
        )
        self.auth = Authenticator(self.verifier)
        self.databases = {
            m.name: Database(m.name, settings.database_url_for(m.name)) for m in self.modules
        }
        self.relays: dict[str, OutboxRelay] = {}
        self.contexts: dict[str, ServiceContext] = {}
        for module in self.modules:
            database = self.databases[module.name]
            relay = OutboxRelay(
                database,
                self.transport,
                batch_size=settings.relay_batch_size,
                poll=settings.relay_poll_seconds,
            )
            self.relays[module.name] = relay
            self.contexts[module.name] = ServiceContext(
                name=module.name,
                settings=settings,
                database=database,
                shared=self.shared,
                auth=self.auth,
                wake_relay=relay.wake,
                redeliver=self.transport.redeliver,
                role=role,
            )
        # Databases of consumers of the installation that do not run here (in-process only).
        self._parked: dict[str, Database] = {}
        self.consumers: dict[str, EventConsumer] = {}
        for module in self.modules:
            if not module.handlers:
                continue
            ctx = self.contexts[module.name]
            bound = {kind: partial(handler, ctx) for kind, handler in module.handlers.items()}
            self.consumers[module.name] = EventConsumer(
                Subscription(module.name, bound),
                ctx.database,
                retry_delays=settings.event_retry_delays,
                on_commit=ctx.wake_relay,
            )

    def _make_transport(self) -> Transport:
        if self.settings.broker_url:
            from mercato.platform.events.rabbitmq import RabbitMQTransport

            return RabbitMQTransport(
                self.settings.broker_url,
                exchange=self.settings.broker_exchange,
                queue_prefix=self.settings.broker_queue_prefix,
            )
        return InProcessTransport()

    @property
    def runs_workers(self) -> bool:
        """Whether consumers and background loops run in this process (relays always do)."""
        return self.role in ("embedded", "worker")

    async def migrate(self) -> None:
        """Bring every service's database to its newest schema."""
        for module in self.modules:
            histories = [module.migrations] if module.migrations else []
            await upgrade(self.databases[module.name], histories)

    async def start(self) -> None:
        """Migrate (if asked), connect, run start-up hooks, then start the loops."""
        self._stop.clear()
        if self.migrate_on_start:
            await self.migrate()
        await self.transport.start()
        await self._declare_topology()
        for module in self.modules:
            if module.on_start is not None:
                await module.on_start(self.contexts[module.name])
        if self.runs_workers:
            await self._park_absent_consumers()
        self._start_loops()
        log.info("platform started", role=self.role, services=[m.name for m in self.modules])

    async def _declare_topology(self) -> None:
        declare = getattr(self.transport, "declare_consumer", None)
        if declare is None:
            return
        for module in self.topology:
            if module.handlers:
                await declare(module.name, module.handlers, self.settings.event_retry_delays)

    async def _park_absent_consumers(self) -> None:
        # The in-process transport's counterpart of declaring every consumer's queue on the
        # broker: an event for a service that is not running in this process is committed to
        # that service's own queue table, to be applied when it starts.
        if not isinstance(self.transport, InProcessTransport):
            return
        for module in self.topology:
            if not module.handlers or module.name in self.consumers:
                continue
            if self.transport.attached(module.name):
                continue
            database = Database(module.name, self.settings.database_url_for(module.name))
            await upgrade(database, [])  # only the platform's event tables
            self._parked[module.name] = database
            self.transport.attach(ParkedQueue(module.name, database, module.handlers))

    def _start_loops(self) -> None:
        loops: list[tuple[str, BackgroundTask]] = []
        # Every role relays its own outbox, so an API replica's events leave right after its
        # commit instead of waiting for a worker's poll (relays on PostgreSQL share an outbox
        # safely: each batch is taken with SKIP LOCKED).
        # With the in-process transport only a process running the consumers may relay: a
        # relay elsewhere would mark events sent that reach no consumer.
        if self.runs_workers or not isinstance(self.transport, InProcessTransport):
            for name, relay in self.relays.items():
                loops.append((f"relay:{name}", relay.run))
        if not self.runs_workers:
            self._launch(loops)
            return
        for name, consumer in self.consumers.items():
            loops.append((f"consumer:{name}", self._consumer_loop(consumer)))
        for module in self.modules:
            if module.background is not None:
                for index, task in enumerate(module.background(self.contexts[module.name])):
                    loops.append((f"background:{module.name}:{index}", task))
        self._launch(loops)

    def _launch(self, loops: list[tuple[str, BackgroundTask]]) -> None:
        for name, loop in loops:
            self._tasks.append(asyncio.create_task(self._supervise(name, loop), name=name))

    def _consumer_loop(self, consumer: EventConsumer) -> BackgroundTask:
        if isinstance(self.transport, InProcessTransport):
            queue = InProcessQueue(consumer, batch_size=self.settings.consumer_batch_size, poll=1.0)
            self.transport.attach(queue)
            return queue.run
        runner = self.transport.runner(consumer)  # type: ignore[attr-defined]
        return runner.run  # type: ignore[no-any-return]

    async def _supervise(self, name: str, loop: BackgroundTask) -> None:
        # A loop that crashes is restarted after a pause instead of silently dying.
        while not self._stop.is_set():
            try:
                await loop(self._stop)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background loop crashed; restarting", loop=name)
                await wait_any(self._stop, timeout=1.0)

    async def stop(self) -> None:
        """Stop the loops, run stop hooks, close connections."""
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
        for module in self.modules:
            if module.on_stop is not None:
                await module.on_stop(self.contexts[module.name])
        await self.transport.close()
        for database in [*self.databases.values(), *self._parked.values()]:
            await database.dispose()
        self._parked.clear()
        await self._http.aclose()
        if self.shared.redis is not None:
            await self.shared.redis.aclose()

    async def redeliver(self, consumer: str, envelope: Envelope) -> None:
        """Hand an event back to a consumer (dead-letter replay)."""
        await self.transport.redeliver(consumer, envelope)

    def create_app(self, title: str = "Mercato") -> FastAPI:
        """The HTTP app of these services; its lifespan starts and stops the platform."""

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        checks = self._readiness_checks()
        app = create_base_app(
            title,
            max_body_bytes=self.settings.max_body_bytes,
            readiness=checks,
            ready_services=self._readiness_by_service([name for name, _ in checks]),
            lifespan=lifespan,
        )
        for module in self.modules:
            if module.router is not None:
                app.include_router(module.router(self.contexts[module.name]))
        app.include_router(events_router(self.databases, self.redeliver, self.auth.require_admin))
        app.state.platform = self
        return app

    def _readiness_checks(self) -> list[tuple[str, Any]]:
        from sqlalchemy import text

        checks: list[tuple[str, Any]] = []
        for name, database in self.databases.items():

            async def check_db(database: Database = database) -> None:
                async with database.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))

            checks.append((f"database:{name}", check_db))
        if self.shared.redis is not None:
            redis = self.shared.redis

            async def check_redis() -> None:
                await redis.ping()

            checks.append(("redis", check_redis))
        if self.settings.broker_url:
            transport = self.transport

            async def check_broker() -> None:
                ready = getattr(transport, "is_connected", None)
                if ready is not None and not ready():
                    raise ConnectionError("broker not connected")

            checks.append(("broker", check_broker))
        return checks

    def _readiness_by_service(self, names: Sequence[str]) -> dict[str, list[str]]:
        """Which of the readiness checks `names` each service of this process depends on: its
        own database, and the Redis and broker every service here shares."""
        shared = [name for name in names if not name.startswith("database:")]
        return {
            module.name: [name for name in names if name == f"database:{module.name}"] + shared
            for module in self.modules
        }


class ConfigurationError(RuntimeError):
    """The settings cannot run this role (said in one line, before anything is written)."""


def _redis_client(settings: Settings) -> Any:
    if not settings.redis_url:
        return None
    import redis.asyncio as redis
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry

    # After a Redis restart every pooled connection is dead; retrying a command on a fresh
    # connection turns that into a short pause instead of one failed request per connection.
    return redis.from_url(
        settings.redis_url,
        decode_responses=False,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=15,
    )
