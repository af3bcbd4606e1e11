"""Products from an external provider (DESIGN §5): integration fetches them and announces each
new or changed one as `external_product.synced`; catalog, which owns products, upserts it here
by `(source, external_id)`.

The hand-over is an event rather than an HTTP call so a catalog that is down loses nothing (the
outbox keeps the events) and integration needs no write access to catalog. The run's counts
(created/updated/unchanged/failed) are integration's, recorded with its job runs.
"""

from __future__ import annotations

from typing import Any

import structlog

from mercato.catalog.domain import LOCAL_SOURCE, SyncOutcome, apply_changes, sync_outcome
from mercato.catalog.service import emit_upserted, new_product
from mercato.catalog.store import ProductRepository
from mercato.integration.contracts import ExternalProductSynced
from mercato.platform.clock import utcnow
from mercato.platform.uow import UnitOfWork

log = structlog.get_logger("mercato.catalog")


def _values(event: ExternalProductSynced) -> dict[str, Any]:
    # A provider's brand is shown where a book shows its author. `active` and `owner_id` are
    # ours to set, never the provider's: a product withdrawn here stays withdrawn.
    return {
        "name": event.name[:200],
        "description": event.description or None,
        "author": event.brand,
        "category": event.category,
        "price": event.price,
        "stock": max(0, event.stock),
    }


async def apply_external_product(uow: UnitOfWork, event: ExternalProductSynced) -> SyncOutcome:
    """Upsert one provider product; a state older than the one applied is ignored."""
    if event.source == LOCAL_SOURCE:
        raise ValueError("`local` names catalog's own products, not a provider")
    repo = uow.repository(ProductRepository)
    applied = await repo.external_mark(event.source, event.external_id)
    if applied is not None and applied >= event.fetched_at:
        return SyncOutcome.UNCHANGED
    outcome = await _upsert(uow, repo, event)
    await repo.set_external_mark(event.source, event.external_id, event.fetched_at)
    log.info(
        "external product applied",
        source=event.source,
        external_id=event.external_id,
        outcome=outcome.value,
    )
    return outcome


async def _upsert(
    uow: UnitOfWork, repo: ProductRepository, event: ExternalProductSynced
) -> SyncOutcome:
    values = _values(event)
    existing = await repo.by_external_id(event.source, event.external_id, for_update=True)
    if existing is None:
        product = new_product(values, source=event.source, external_id=event.external_id)
        if await repo.add(product):
            await emit_upserted(uow, product)
            return SyncOutcome.CREATED
        # Inserted a moment ago by another consumer replica: update that one instead.
        existing = await repo.by_external_id(event.source, event.external_id, for_update=True)
        assert existing is not None
    updated = apply_changes(existing, values, utcnow())
    outcome = sync_outcome(existing, updated)
    if outcome is SyncOutcome.UPDATED:
        await repo.save(updated)
        await emit_upserted(uow, updated)
    return outcome
