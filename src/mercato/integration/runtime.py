"""The integration service of one process, assembled from settings (used by module.py and cli.py).

Exporter credentials (DESIGN §6): `MERCATO_EXPORTER_CLIENT_SECRET` wins (distributed mode);
otherwise identity, when it runs in this process, hands them over (its contracts'
`ExporterHandover`) on its first start and this service keeps the secret in its own
database, so a later start (or a CLI run beside the server) finds it without identity handing
it over again. That kept secret and the cached access tokens are stored sealed with the
installation's key-encryption key (`mercato.platform.secrets`); values kept in clear by an
older version are still read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select, update

from mercato.identity.contracts import (
    EXPORTER_CLIENT_ID,
    EXPORTER_SCOPES,
    ExporterHandover,
)
from mercato.integration.demo import DemoPartner, demo_settings
from mercato.integration.domain import (
    EXPORT_PRODUCTS,
    SYNC_EXTERNAL_ORDERS,
    SYNC_EXTERNAL_PRODUCTS,
    JobSpec,
)
from mercato.integration.exporter import ExportProducts
from mercato.integration.jobs import Job
from mercato.integration.scheduler import Scheduler
from mercato.integration.service import IntegrationService
from mercato.integration.settings import IntegrationSettings
from mercato.integration.store import Credentials
from mercato.integration.syncs import SyncExternalOrders, SyncExternalProducts
from mercato.integration.tables import client_credentials
from mercato.integration.token_store import DurableBudgetTokenStore, SqlTokenStore
from mercato.integration.upstreams import (
    CATALOG,
    IDENTITY,
    PROVIDERS,
    ProductProvider,
    Upstream,
    catalog_base_url,
    external_problem,
    external_upstream,
    identity_base_url,
    identity_tokens,
    resilient,
)
from mercato.platform.clock import utcnow
from mercato.platform.db import Database
from mercato.platform.secrets import SecretBox, secret_box
from mercato.platform.settings import Settings
from mercato.platform.token_manager import TokenManager
from mercato.platform.token_stores import RedisTokenStore, TokenStore
from mercato.platform.uow import UnitOfWork

log = structlog.get_logger("mercato.integration")

SERVICE = "integration"
EXPORTER = "exporter"  # the name the exporter's credentials are kept under

DESCRIPTIONS = {
    EXPORT_PRODUCTS: "Write every catalog product to a timestamped CSV file (keeps the newest N)",
    SYNC_EXTERNAL_PRODUCTS: "Pull the external provider's products into the catalog",
    SYNC_EXTERNAL_ORDERS: "Import the external provider's orders",
}


class Integration:
    """Stores, upstreams, jobs, scheduler and use cases of one process."""

    def __init__(
        self,
        *,
        settings: Settings,
        integ: IntegrationSettings,
        database: Database,
        redis: Any | None = None,
        exporter: ExporterHandover | None = None,
        wake_relay: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = utcnow,
        secrets: SecretBox | None = None,
    ) -> None:
        self.settings = settings
        self.secrets = secrets if secrets is not None else secret_box(settings)
        self.integ = integ
        self.database = database
        # Where identity, when it runs in this process, hands over the exporter's credentials.
        self.exporter = exporter if exporter is not None else ExporterHandover()
        self._wake_relay = wake_relay
        self._clock = clock
        self.sql_tokens = SqlTokenStore(database, secrets=self.secrets)
        self.redis_tokens = (
            RedisTokenStore(redis, f"{settings.redis_prefix}:integration", secrets=self.secrets)
            if redis is not None
            else None
        )
        self.store: TokenStore = (
            DurableBudgetTokenStore(self.redis_tokens, self.sql_tokens)
            if self.redis_tokens is not None
            else self.sql_tokens
        )
        self.demo: DemoPartner | None = None
        self._exporter: tuple[str, str] | None = None
        self._identity_tokens: TokenManager | None = None
        self._assemble()

    def uow(self) -> UnitOfWork:
        """A unit of work on the integration database."""
        return UnitOfWork(self.database, SERVICE, self._wake_relay)

    @property
    def export_dir(self) -> Path:
        """Where export files go: MERCATO_EXPORT_DIR, else `<data dir>/exports`."""
        return self.integ.export_dir or self.settings.data_dir / "exports"

    def _assemble(self) -> None:
        integ = self.integ
        self.external: Upstream | None = external_upstream(integ, self.store)
        self.identity_http = resilient(IDENTITY, identity_base_url(self.settings, integ), integ)
        self.catalog_http = resilient(
            CATALOG,
            catalog_base_url(self.settings, integ),
            integ,
            total_timeout=integ.export_total_timeout,
        )
        self.jobs: dict[str, Job] = {
            EXPORT_PRODUCTS: ExportProducts(
                self._spec(EXPORT_PRODUCTS),
                tokens=self.exporter_tokens,
                catalog=self.catalog_http,
                directory=self.export_dir,
                pattern=integ.export_file_pattern,
                header=integ.export_include_header,
                keep=integ.export_keep,
                uow=self.uow,
                problem=self._export_problem,
                neutralise=integ.export_neutralise_formulas,
            ),
            SYNC_EXTERNAL_PRODUCTS: SyncExternalProducts(
                self._spec(SYNC_EXTERNAL_PRODUCTS),
                source=integ.external_source,
                provider=self._provider,
                uow=self.uow,
                problem=lambda: external_problem(self.integ, needs_token=False),
            ),
            SYNC_EXTERNAL_ORDERS: SyncExternalOrders(
                self._spec(SYNC_EXTERNAL_ORDERS),
                source=integ.external_source,
                tokens=lambda: self.external.tokens if self.external else None,
                path=integ.external_orders_path,
                page_size=integ.external_page_size,
                uow=self.uow,
                problem=lambda: external_problem(self.integ, needs_token=True),
            ),
        }
        self.scheduler = Scheduler(
            self.jobs,
            self.uow,
            lease_seconds=integ.job_lease_seconds,
            poll_seconds=integ.scheduler_poll_seconds,
            clock=self._clock,
        )
        self.service = IntegrationService(
            uow=self.uow,
            jobs=self.jobs,
            export_dir=self.export_dir,
            token_managers=self.token_managers,
            wake_scheduler=self.scheduler.wake,
            clock=self._clock,
        )

    def _spec(self, name: str) -> JobSpec:
        return JobSpec(
            name=name,
            description=DESCRIPTIONS[name],
            schedule=self.integ.schedule(name),
            initial_delay=self.integ.initial_delay(name),
        )

    def _provider(self) -> ProductProvider | None:
        if self.external is None:
            return None
        factory = PROVIDERS.get(self.integ.external_provider)
        if factory is None:
            raise RuntimeError(f"unknown provider {self.integ.external_provider!r}")
        return factory(
            self.external.http, self.integ.external_products_path, self.integ.external_page_size
        )

    async def start(self) -> None:
        """Start the demo partner when asked, and pick up the exporter's credentials."""
        if self.integ.demo and not self.integ.external_base_url:
            self.demo = DemoPartner(self.integ.partner_port)
            await self.demo.start()
            await self._close_clients()
            self.integ = demo_settings(self.integ, self.demo)
            self._assemble()
        await self.exporter_credentials()

    async def stop(self) -> None:
        """Close clients and the demo partner."""
        await self._close_clients()
        if self.demo is not None:
            await self.demo.stop()

    async def _close_clients(self) -> None:
        for client in (self.identity_http, self.catalog_http):
            await client.aclose()
        if self.external is not None:
            await self.external.aclose()

    async def exporter_credentials(self) -> tuple[str, str] | None:
        """(client_id, secret) of the exporter: environment, handed over, or kept."""
        if self.integ.exporter_client_secret is not None:
            return EXPORTER_CLIENT_ID, self.integ.exporter_client_secret.get_secret_value()
        handed = self.exporter.credentials
        if handed is not None:
            pair = (handed.client_id, handed.client_secret)
            if self._exporter != pair:
                async with self.uow() as uow:
                    kept = Credentials(uow.connection)
                    if self._opened(await kept.get(EXPORTER)) != pair:
                        sealed = self.secrets.seal(handed.client_secret)
                        await kept.put(EXPORTER, handed.client_id, sealed, now=self._clock())
                        log.info("exporter credentials kept", client_id=handed.client_id)
                self._exporter = pair
            return pair
        if self._exporter is None:
            async with self.uow() as uow:
                self._exporter = self._opened(await Credentials(uow.connection).get(EXPORTER))
        return self._exporter

    def _opened(self, kept: tuple[str, str] | None) -> tuple[str, str] | None:
        return None if kept is None else (kept[0], self.secrets.open(kept[1]))

    async def reseal_secrets(self) -> dict[str, int]:
        """Re-encrypt every secret integration keeps with the first key-encryption key (clear
        ones get sealed): kept client secrets, cached tokens in the database and in Redis."""
        credentials = 0
        async with self.uow() as uow:
            conn = uow.connection
            rows = (
                await conn.execute(
                    select(client_credentials.c.name, client_credentials.c.client_secret)
                )
            ).all()
            for row in rows:
                await conn.execute(
                    update(client_credentials)
                    .where(client_credentials.c.name == row.name)
                    .values(client_secret=self.secrets.reseal(row.client_secret))
                )
                credentials += 1
        counts = {
            "client secrets": credentials,
            "cached tokens": await self.sql_tokens.reseal_tokens(),
        }
        if self.redis_tokens is not None:
            counts["cached tokens (Redis)"] = await self.redis_tokens.reseal_tokens()
        return counts

    async def exporter_tokens(self) -> TokenManager | None:
        """The exporter's token manager against identity, or None without credentials."""
        creds = await self.exporter_credentials()
        if creds is None:
            return None
        current = self._identity_tokens
        if current is None or current.client_id != creds[0] or current.secret_differs(creds[1]):
            self._identity_tokens = identity_tokens(
                self.settings,
                self.integ,
                self.identity_http,
                self.store,
                creds[0],
                creds[1],
                " ".join(EXPORTER_SCOPES),
            )
        return self._identity_tokens

    async def _export_problem(self) -> str | None:
        if await self.exporter_credentials() is None:
            return (
                f"no credentials for the {EXPORTER_CLIENT_ID} client: identity hands them over "
                "on its first start in this process; otherwise set MERCATO_EXPORTER_CLIENT_SECRET"
            )
        return None

    async def token_managers(self) -> list[TokenManager]:
        """Every configured upstream's token manager."""
        managers = []
        exporter = await self.exporter_tokens()
        if exporter is not None:
            managers.append(exporter)
        if self.external is not None and self.external.tokens is not None:
            managers.append(self.external.tokens)
        return managers
