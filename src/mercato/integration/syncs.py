"""The external syncs (DESIGN §5): provider products handed to catalog, provider orders imported.

Products belong to catalog: this job reads the provider (outbound, resilient, token-managed),
compares each product with what it last handed over, and emits `external_product.synced` for
the new and changed ones in the same transaction that records the new fingerprint. Catalog
consumes the event and upserts by `(source, external_id)`. So no service touches another's
tables, a catalog that is down loses nothing (the outbox keeps the events), and a second run
over unchanged data is `created 0, unchanged = total`.

One bad product never ends a run: a product the provider's adapter refuses, or one catalog
could not hold (see `check_product`), is counted `failed` with its reason, and the rest are
imported. The run succeeds; its `error` summarises the failures (`GET /api/v1/sync/status`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from mercato.integration.contracts import ExternalOrderImported, ExternalProductSynced
from mercato.integration.domain import (
    ExternalOrder,
    ExternalProduct,
    JobSpec,
    RunOutcome,
    classify,
    partner_order,
)
from mercato.integration.jobs import Job, RunContext
from mercato.integration.store import Fingerprints
from mercato.integration.upstreams import ProductProvider
from mercato.platform.money import parse_money
from mercato.platform.token_manager import TokenManager
from mercato.platform.uow import UnitOfWorkFactory

log = structlog.get_logger("mercato.integration.jobs")

# Catalog's column sizes (a longer value would fail catalog's upsert of that product).
MAX_EXTERNAL_ID = 100
MAX_CATEGORY = 100
MAX_BRAND = 200
# How many failures a run's summary names (the count covers them all).
SUMMARY_NAMED = 10


def check_product(product: ExternalProduct) -> ExternalProduct:
    """`product` if catalog can take it as it is; ValueError saying why not otherwise. Whatever
    the adapter (providers are pluggable), the event and catalog's columns hold what passes."""
    if not 0 < len(product.external_id) <= MAX_EXTERNAL_ID:
        raise ValueError(f"an id of 1 to {MAX_EXTERNAL_ID} characters")
    if not product.name or len(product.name) > 200:
        raise ValueError("a name of 1 to 200 characters")
    parse_money(product.price)  # finite, bounded, two places: what the event's Money accepts
    if product.category is not None and len(product.category) > MAX_CATEGORY:
        raise ValueError(f"a category of at most {MAX_CATEGORY} characters")
    if product.brand is not None and len(product.brand) > MAX_BRAND:
        raise ValueError(f"a brand of at most {MAX_BRAND} characters")
    return product


class FailureSummary:
    """The failed items of one run and why, for the run's `error`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.count = 0
        self._named: list[str] = []

    def add(self, raw: object, reason: str) -> None:
        """Count one failed item (named in the summary while there is room)."""
        self.count += 1
        if len(self._named) < SUMMARY_NAMED:
            ident = raw.get("id") if isinstance(raw, dict) else None
            label = f"id {str(ident)[:40]!r}" if ident is not None else "no id"
            self._named.append(f"{label}: {reason[:120]}")

    def text(self) -> str | None:
        """`3 products failed: id '7': ...; id '9': ...`, or None without failures."""
        if not self.count:
            return None
        more = self.count - len(self._named)
        tail = f"; and {more} more" if more > 0 else ""
        noun = self.kind if self.count != 1 else self.kind.removesuffix("s")
        return f"{self.count} {noun} failed: " + "; ".join(self._named) + tail


class SyncExternalProducts(Job):
    """Pull the provider's products and hand the new and changed ones to catalog."""

    def __init__(
        self,
        spec: JobSpec,
        *,
        source: str,
        provider: Callable[[], ProductProvider | None],
        uow: UnitOfWorkFactory,
        problem: Callable[[], str | None],
    ) -> None:
        self.spec = spec
        self.source = source
        self._provider = provider
        self._uow = uow
        self._problem = problem

    def disabled_reason(self) -> str | None:
        """See `Job`."""
        return self._problem()

    async def run(self, ctx: RunContext) -> RunOutcome:
        """See `Job`."""
        provider = self._provider()
        if provider is None:
            raise RuntimeError(self.disabled_reason() or "no provider")
        counts = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0}
        failures = FailureSummary("products")
        fetched_at = ctx.now()
        async for page in provider.pages():
            parsed: dict[str, ExternalProduct] = {}
            for raw in page:
                try:
                    product = check_product(provider.parse(raw))
                except (ValueError, ArithmeticError, TypeError) as exc:
                    # ArithmeticError: decimal's InvalidOperation (NaN compared, a huge
                    # exponent) from an adapter that did not turn it into a ValueError.
                    counts["failed"] += 1
                    failures.add(raw, str(exc) or type(exc).__name__)
                    log.warning("external product skipped", source=self.source, error=str(exc))
                    continue
                parsed[product.external_id] = product  # a repeated id: the last one counts
            await self._apply(ctx, list(parsed.values()), fetched_at, counts)
            ctx.progress(sum(counts.values()), None)
        log.info("external products synced", source=self.source, **counts)
        return RunOutcome(counts=counts, error=failures.text())

    async def _apply(
        self,
        ctx: RunContext,
        products: list[ExternalProduct],
        fetched_at: datetime,
        counts: dict[str, int],
    ) -> None:
        async with self._uow() as uow:
            prints = Fingerprints(uow.connection)
            known = await prints.products(self.source, [p.external_id for p in products])
            now = ctx.now()
            for product in products:
                fingerprint = product.fingerprint()
                change = classify(known.get(product.external_id), fingerprint)
                counts[change] += 1
                if change == "unchanged":
                    continue
                created = change == "created"
                await prints.save_product(
                    self.source, product.external_id, fingerprint, now, created
                )
                event = ExternalProductSynced(
                    source=self.source,
                    external_id=product.external_id,
                    name=product.name,
                    description=product.description,
                    price=product.price,
                    category=product.category,
                    brand=product.brand,
                    stock=product.stock,
                    created=created,
                    run_id=ctx.run_id,
                    fetched_at=fetched_at,
                    occurred_at=now,
                )
                await uow.emit(event, subject=f"{self.source}:{product.external_id}")


class SyncExternalOrders(Job):
    """Pull the provider's orders with a managed token and import them by external id."""

    def __init__(
        self,
        spec: JobSpec,
        *,
        source: str,
        tokens: Callable[[], TokenManager | None],
        path: str,
        page_size: int,
        uow: UnitOfWorkFactory,
        problem: Callable[[], str | None],
    ) -> None:
        self.spec = spec
        self.source = source
        self._tokens = tokens
        self.path = path
        self.page_size = page_size
        self._uow = uow
        self._problem = problem

    def disabled_reason(self) -> str | None:
        """See `Job`."""
        return self._problem()

    async def run(self, ctx: RunContext) -> RunOutcome:
        """See `Job`."""
        tokens = self._tokens()
        if tokens is None:
            raise RuntimeError(self.disabled_reason() or "no token manager")
        counts = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0}
        skip = 0
        while True:
            response = await tokens.call(
                "GET", self.path, params={"limit": self.page_size, "skip": skip}
            )
            if response.status_code != 200:
                raise RuntimeError(f"{self.source} answered HTTP {response.status_code}")
            body: Any = response.json()
            raw_orders = body.get("orders") if isinstance(body, dict) else None
            if not isinstance(raw_orders, list):
                raise ValueError(f"{self.source}'s answer has no 'orders' list")
            orders: dict[str, ExternalOrder] = {}
            for raw in raw_orders:
                try:
                    order = partner_order(raw if isinstance(raw, dict) else {})
                except ValueError as exc:
                    counts["failed"] += 1
                    log.warning("external order skipped", source=self.source, error=str(exc))
                    continue
                orders[order.external_id] = order
            await self._apply(ctx, list(orders.values()), counts)
            skip += len(raw_orders)
            total = body.get("total")
            ctx.progress(skip, total if isinstance(total, int) else None)
            if not raw_orders or not isinstance(total, int) or skip >= total:
                break
        log.info("external orders synced", source=self.source, **counts)
        return RunOutcome(counts=counts)

    async def _apply(
        self, ctx: RunContext, orders: list[ExternalOrder], counts: dict[str, int]
    ) -> None:
        async with self._uow() as uow:
            prints = Fingerprints(uow.connection)
            known = await prints.orders(self.source, [o.external_id for o in orders])
            now = ctx.now()
            for order in orders:
                change = classify(known.get(order.external_id), order.fingerprint())
                counts[change] += 1
                if change == "unchanged":
                    continue
                created = change == "created"
                await prints.save_order(self.source, order, now, created)
                event = ExternalOrderImported(
                    external_id=order.external_id,
                    source=self.source,
                    status=order.status,
                    total=order.total,
                    currency=order.currency,
                    created=created,
                    occurred_at=now,
                )
                await uow.emit(event, subject=f"{self.source}:{order.external_id}")
