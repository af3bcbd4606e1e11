"""What other services may know of catalog: product and stock events (DESIGN §1, §4)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from mercato.platform.events import EventPayload
from mercato.platform.money import Money

StockRejectReason = Literal["out_of_stock", "unknown_product"]


class ProductUpserted(EventPayload):
    """A product was created or changed; its whole current state."""

    event_type: ClassVar[str] = "product.upserted"

    product_id: str
    name: str
    price: Money
    currency: str = "USD"
    active: bool
    stock: int
    source: str = "local"
    external_id: str | None = None
    # Grows with each change of the product, so a replica ignores an older state.
    version: int
    occurred_at: datetime


class ProductDeleted(EventPayload):
    """A product was deleted."""

    event_type: ClassVar[str] = "product.deleted"

    product_id: str
    version: int
    occurred_at: datetime


class StockLine(BaseModel):
    """A quantity of one product."""

    product_id: str
    quantity: int


class StockReserved(EventPayload):
    """Every line of an order was reserved (stock taken)."""

    event_type: ClassVar[str] = "stock.reserved"

    order_id: str
    items: list[StockLine]
    occurred_at: datetime


class StockRejected(EventPayload):
    """The order's stock could not be reserved; nothing was taken."""

    event_type: ClassVar[str] = "stock.rejected"

    order_id: str
    reason: StockRejectReason
    product_id: str | None = None
    occurred_at: datetime


class StockReleased(EventPayload):
    """A reservation of a failed order was given back."""

    event_type: ClassVar[str] = "stock.released"

    order_id: str
    items: list[StockLine]
    occurred_at: datetime


# --- External product sync (DESIGN §5): catalog owns the products and the record of each run;
# integration fetches from the provider and hands catalog batches over HTTP with these DTOs:
#
#   POST /api/v1/sync/runs/claim              {source}            -> 200 SyncRunOut | 204
#        takes the oldest run an admin queued with POST /api/v1/sync/trigger
#   POST /api/v1/sync/runs                    SyncRunStart        -> 201 SyncRunOut
#        starts a run of its own (a scheduled tick)
#   POST /api/v1/sync/runs/{run_id}/products  ExternalProductBatch -> 200 ExternalBatchResult
#        upserts by (source, external_id); call it once per page fetched
#   POST /api/v1/sync/runs/{run_id}/finish    SyncRunFinish       -> 200 SyncRunOut
#
# Callers: an admin, or a machine token with scope `catalog.sync` (or `mercato.admin`).

SYNC_SCOPE = "catalog.sync"
SOURCE_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
MAX_BATCH = 500
SyncRunStatus = Literal["queued", "running", "succeeded", "failed"]
SyncTrigger = Literal["manual", "schedule"]


class ExternalProduct(BaseModel):
    """One product as the provider describes it, mapped to catalog's fields by integration."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    external_id: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    # The brand for non-books; shown as `author` like a book's.
    author: str | None = Field(default=None, max_length=200)
    category: str | None = Field(default=None, max_length=100)
    price: Money
    stock: int = Field(default=0, ge=0, le=1_000_000_000)
    active: bool = True


class SyncRunStart(BaseModel):
    """Start a sync run (integration's scheduled tick)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(pattern=SOURCE_PATTERN)
    trigger: SyncTrigger = "schedule"
    # When integration's scheduler will run the sync next, shown by GET /api/v1/sync/status.
    next_run_at: datetime | None = None


class SyncRunClaim(BaseModel):
    """Take the oldest queued (admin-triggered) run, for `source`."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(pattern=SOURCE_PATTERN)
    next_run_at: datetime | None = None


class ExternalProductBatch(BaseModel):
    """One page of provider products; each is validated on its own, so one bad product is
    counted `failed` (with its error) instead of refusing the page."""

    model_config = ConfigDict(extra="forbid")

    products: list[dict[str, Any]] = Field(max_length=MAX_BATCH)


class ExternalItemError(BaseModel):
    """Why one provider product was not upserted."""

    index: int
    external_id: str | None
    error: str


class ExternalBatchResult(BaseModel):
    """What one batch did; the run's counts grow by these."""

    run_id: str
    created: int
    updated: int
    unchanged: int
    failed: int
    errors: list[ExternalItemError] = []


class SyncRunFinish(BaseModel):
    """End a run."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["succeeded", "failed"]
    error: str | None = Field(default=None, max_length=2000)
    next_run_at: datetime | None = None


class SyncRunOut(BaseModel):
    """A sync run as GET /api/v1/sync/status lists it."""

    id: str
    source: str | None
    trigger: SyncTrigger
    status: SyncRunStatus
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    created: int
    updated: int
    unchanged: int
    failed: int
    error: str | None = None
