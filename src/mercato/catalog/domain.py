"""Catalog's rules: what a product is, how it changes, and how an order's stock is planned.

No framework imports here (an import-linter contract keeps it so).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

LOCAL_SOURCE = "local"
DEFAULT_CURRENCY = "USD"
# Fields an admin (or a provider) sets; the rest are kept by catalog itself.
EDITABLE = ("name", "description", "author", "category", "price", "stock", "owner_id", "active")


@dataclass(frozen=True)
class Product:
    """A product on sale (or withdrawn); `version` grows by one with each change."""

    id: str
    name: str
    description: str | None
    author: str | None
    category: str | None
    price: Decimal
    currency: str
    stock: int
    active: bool
    owner_id: str | None
    external_id: str | None
    source: str
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def available(self) -> bool:
        """On sale: active with stock left."""
        return self.active and self.stock > 0

    @property
    def status(self) -> str:
        """`available` or `unavailable` (DESIGN §2)."""
        return "available" if self.available else "unavailable"


def apply_changes(product: Product, changes: Mapping[str, Any], now: datetime) -> Product:
    """The product with `changes` (editable fields only); a new version only if any differs."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    different = {k: v for k, v in changes.items() if getattr(product, k) != v}
    if not different:
        return product
    return replace(product, **different, version=product.version + 1, updated_at=now)


def full_state(values: Mapping[str, Any]) -> dict[str, Any]:
    """A PUT: every editable field, the omitted ones back to their defaults."""
    defaults: dict[str, Any] = {
        "description": None,
        "author": None,
        "category": None,
        "stock": 0,
        "owner_id": None,
        "active": True,
    }
    return {name: values.get(name, defaults.get(name)) for name in EDITABLE}


class SyncOutcome(StrEnum):
    """What an upsert from a provider did to one product."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def sync_outcome(existing: Product | None, updated: Product) -> SyncOutcome:
    """Created when new, unchanged when the provider sent what we hold, else updated."""
    if existing is None:
        return SyncOutcome.CREATED
    return SyncOutcome.UNCHANGED if existing.version == updated.version else SyncOutcome.UPDATED


# --- stock reservations --------------------------------------------------------------------


class ReservationState(StrEnum):
    """Catalog's record of one order, which makes every step idempotent by order id.

    `cancelled` is a tombstone: the order failed before catalog saw it placed, so a late
    `order.placed` must not take stock.
    """

    RESERVED = "reserved"
    REJECTED = "rejected"
    RELEASED = "released"
    CANCELLED = "cancelled"


def quantities_by_product(lines: Iterable[tuple[str, int]]) -> dict[str, int]:
    """The quantity wanted of each product (an order may name a product on several lines),
    in product id order so concurrent reservations lock rows in one order (no deadlocks)."""
    wanted: dict[str, int] = defaultdict(int)
    for product_id, quantity in lines:
        if quantity <= 0:
            raise ValueError("quantities must be positive")
        wanted[product_id] += quantity
    return dict(sorted(wanted.items()))


def release_on_failure(state: ReservationState | None) -> tuple[bool, ReservationState]:
    """On `order.failed`: whether to give stock back, and the state to record.

    Only a reservation catalog made is released, and only once; an order catalog never saw is
    tombstoned so its late `order.placed` takes nothing.
    """
    if state is None:
        return False, ReservationState.CANCELLED
    if state is ReservationState.RESERVED:
        return True, ReservationState.RELEASED
    return False, state


def product_fields() -> tuple[str, ...]:
    """The attribute names of `Product`, for adapters that map rows onto it."""
    return tuple(f.name for f in fields(Product))
