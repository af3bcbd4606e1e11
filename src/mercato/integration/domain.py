"""Integration rules, free of frameworks: schedules, runs, the CSV export format, provider data.

Everything here is pure: times are given, never read, and nothing touches a file or the network.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal

from croniter import croniter

from mercato.catalog.contracts import EXPORT_CSV_HEADER

# ---------------------------------------------------------------------------------------------
# Schedules

_DURATION = re.compile(r"^(?:every\s+)?(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hour|d|day)?s?$", re.I)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400}
_UNIT_SECONDS["day"] = 86400


@dataclass(frozen=True)
class Schedule:
    """Either a fixed interval in seconds or a cron expression (UTC)."""

    interval: float | None = None
    cron: str | None = None

    def next_after(self, tick: datetime, now: datetime) -> datetime:
        """The first tick strictly after `now` that follows `tick` (missed ticks coalesce)."""
        if self.interval is not None:
            step = timedelta(seconds=self.interval)
            if now < tick + step:
                return tick + step
            skipped = math.floor((now - tick) / step)
            return tick + step * (skipped + 1)
        assert self.cron is not None
        base = max(tick, now)
        nxt: datetime = croniter(self.cron, base.astimezone(UTC)).get_next(datetime)
        return nxt if nxt.tzinfo else nxt.replace(tzinfo=UTC)

    def first_tick(self, now: datetime, initial_delay: float) -> datetime:
        """The first tick of a job never scheduled before: after the initial delay."""
        start = now + timedelta(seconds=initial_delay)
        if self.interval is not None:
            return start
        nxt: datetime = croniter(self.cron, start.astimezone(UTC)).get_next(datetime)
        return nxt if nxt.tzinfo else nxt.replace(tzinfo=UTC)

    def describe(self) -> str:
        """`every 300s` or `cron */5 * * * *`."""
        if self.interval is not None:
            return f"every {self.interval:g}s"
        return f"cron {self.cron}"


def parse_schedule(text: str) -> Schedule:
    """`300`, `30s`, `5m`, `1h`, `every 5m` or a five-field cron expression."""
    value = text.strip()
    match = _DURATION.match(value)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
        if seconds < 1:
            raise ValueError(f"schedule {text!r}: an interval of at least 1 s")
        return Schedule(interval=seconds)
    if len(value.split()) == 5 and croniter.is_valid(value):
        return Schedule(cron=value)
    raise ValueError(f"schedule {text!r}: expected an interval (5m, 300, 1h) or a cron expression")


# ---------------------------------------------------------------------------------------------
# Jobs and runs

RunStatus = Literal["queued", "running", "succeeded", "failed", "skipped"]
Trigger = Literal["schedule", "manual", "cli"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "skipped"})

EXPORT_PRODUCTS = "export-products"
SYNC_EXTERNAL_PRODUCTS = "sync-external-products"
SYNC_EXTERNAL_ORDERS = "sync-external-orders"
JOB_NAMES = (EXPORT_PRODUCTS, SYNC_EXTERNAL_PRODUCTS, SYNC_EXTERNAL_ORDERS)


@dataclass(frozen=True)
class JobSpec:
    """What a job is and when it fires."""

    name: str
    description: str
    schedule: Schedule
    initial_delay: float


@dataclass
class RunOutcome:
    """What a finished run reports: counts (created, rows, ...) and an output (a file name)."""

    counts: dict[str, int] = field(default_factory=dict)
    output: str | None = None
    # A run that succeeded with some items failed says why here (shown as the run's `error`).
    error: str | None = None


def error_text(exc: BaseException, limit: int = 1000) -> str:
    """A run's recorded error: the exception type and message, bounded."""
    message = str(exc).strip()
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text[:limit]


# ---------------------------------------------------------------------------------------------
# The CSV export (seed 000)

# DESIGN §5's columns, which catalog's CSV export writes too (so the job copies its rows).
CSV_HEADER = EXPORT_CSV_HEADER
CENT = Decimal("0.01")


class BadProduct(ValueError):
    """A product line of the catalog's export that cannot be turned into a CSV row."""


# The shapes catalog answers, taken as they are (a million rows: parsing each costs seconds).
_TWO_PLACES = re.compile(r"^-?\d+\.\d\d$")
_UTC_ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(?:Z|\+00:00)$")


def csv_row(product: Mapping[str, Any]) -> tuple[str, ...]:
    """One CSV row from a product as DESIGN §2 shapes it (price two places, UTC ISO date)."""
    try:
        price = product["price"]
        if not (isinstance(price, str) and _TWO_PLACES.match(price)):
            price = f"{Decimal(str(price)).quantize(CENT, rounding=ROUND_HALF_UP):.2f}"
        if "status" in product:
            available = product["status"] == "available"
        else:
            available = bool(product.get("active")) and int(product.get("stock") or 0) > 0
        created = str(product["created_at"])
        utc = _UTC_ISO.match(created)
        if utc is not None:
            created = utc.group(1) + "Z"
        else:
            created = _parse_time(created).isoformat(timespec="seconds").replace("+00:00", "Z")
        return (
            str(product["id"]),
            str(product.get("name") or ""),
            str(product.get("description") or ""),
            price,
            "Available" if available else "Unavailable",
            str(product.get("owner_id") or ""),
            created,
        )
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise BadProduct(f"product {product.get('id')!r}: {exc}") from None


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def export_file_name(pattern: str, now: datetime, taken: Iterable[str] = ()) -> str:
    """The file name of an export made at `now` (UTC); `_2`, `_3`... when the second is taken.

    The suffix grows past every one in use, so a name freed by rotation is not given to a
    newer file while later-suffixed ones of the same second remain.
    """
    name = now.astimezone(UTC).strftime(pattern)
    stem = name.removesuffix(".csv")
    suffix = re.compile(re.escape(stem) + r"_(\d+)\.csv$")
    used = set(taken)
    numbers = [int(m.group(1)) for m in map(suffix.match, used) if m]
    if name not in used and not numbers:
        return name
    return f"{stem}_{max(numbers, default=1) + 1}.csv"


def files_to_rotate(newest_first: Sequence[str], keep: int) -> list[str]:
    """The exports to delete so that only the newest `keep` remain."""
    return list(newest_first[keep:])


# ---------------------------------------------------------------------------------------------
# External provider data


@dataclass(frozen=True)
class ExternalProduct:
    """A provider's product, normalised for the catalog."""

    external_id: str
    name: str
    description: str
    price: Decimal
    category: str | None
    brand: str | None
    stock: int

    def fingerprint(self) -> str:
        """A digest of every field: equal fingerprints mean nothing changed."""
        return _digest(
            [
                self.external_id,
                self.name,
                self.description,
                str(self.price),
                self.category,
                self.brand,
                self.stock,
            ]
        )


# What catalog can hold: its money bound (platform.money.MAX_AMOUNT) and a 32-bit stock column.
MAX_PRICE = Decimal("1000000000.00")
MAX_STOCK = 2**31 - 1


def dummyjson_product(raw: Mapping[str, Any]) -> ExternalProduct:
    """A DummyJSON product (`{id, title, description, price, category, brand, stock}`).

    ValueError, saying what is wrong, for a product that cannot be imported as it is (a missing
    title, a price that is not a finite number of at most `MAX_PRICE`, ...).
    """
    if not isinstance(raw, Mapping):
        raise ValueError("not a JSON object")
    missing = [key for key in ("id", "title", "price") if raw.get(key) is None]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    external_id = str(raw["id"])
    name = str(raw["title"]).strip()
    if not external_id or not name or len(name) > 200:
        raise ValueError("a title of 1 to 200 characters")
    price_text = raw["price"]
    try:
        if isinstance(price_text, bool):
            raise TypeError
        price = Decimal(str(price_text).strip())
    except (TypeError, ValueError, InvalidOperation):
        raise ValueError(f"price {str(price_text)[:40]!r} is not a number") from None
    # Checked before quantize and any comparison: both raise InvalidOperation on NaN or a huge
    # exponent, which is not a ValueError and would end the whole sync.
    if not price.is_finite():
        raise ValueError(f"price {str(price_text)[:40]!r} is not a finite number")
    if price < 0 or price > MAX_PRICE:
        raise ValueError(f"price {str(price_text)[:40]!r} is not between 0 and {MAX_PRICE}")
    price = price.quantize(CENT, rounding=ROUND_HALF_UP)
    try:
        stock = int(raw.get("stock") or 0)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"stock {str(raw.get('stock'))[:40]!r} is not a whole number") from None
    if not 0 <= stock <= MAX_STOCK:
        raise ValueError(f"stock {stock} is not between 0 and {MAX_STOCK}")
    return ExternalProduct(
        external_id=external_id,
        name=name,
        description=str(raw.get("description") or ""),
        price=price,
        category=_opt(raw.get("category")),
        brand=_opt(raw.get("brand")),
        stock=stock,
    )


@dataclass(frozen=True)
class ExternalOrder:
    """An order of an external provider."""

    external_id: str
    status: str
    total: Decimal
    currency: str
    customer_email: str | None
    items: list[dict[str, Any]]
    placed_at: datetime | None

    def fingerprint(self) -> str:
        """A digest of every field: equal fingerprints mean nothing changed."""
        placed = self.placed_at.isoformat() if self.placed_at else None
        return _digest(
            [
                self.external_id,
                self.status,
                str(self.total),
                self.currency,
                self.customer_email,
                self.items,
                placed,
            ]
        )


def partner_order(raw: Mapping[str, Any]) -> ExternalOrder:
    """An order of the partner's `/api/orders` (`{id, status, total, currency, ...}`)."""
    try:
        external_id = str(raw["id"])
        total = Decimal(str(raw["total"])).quantize(CENT, rounding=ROUND_HALF_UP)
        status = str(raw["status"])
        items = raw.get("items") or []
        if not isinstance(items, list):
            raise TypeError("items")
        placed = _parse_time(str(raw["created_at"])) if raw.get("created_at") else None
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise ValueError(f"malformed order: {type(exc).__name__}") from None
    if not external_id or len(external_id) > 100 or not total.is_finite():
        raise ValueError("an order id of 1 to 100 characters and a finite total")
    return ExternalOrder(
        external_id=external_id,
        status=status[:32],
        total=total,
        currency=str(raw.get("currency") or "USD")[:3].upper(),
        customer_email=_opt(raw.get("customer_email")),
        items=[dict(item) for item in items if isinstance(item, Mapping)],
        placed_at=placed,
    )


Change = Literal["created", "updated", "unchanged"]


def classify(previous_fingerprint: str | None, fingerprint: str) -> Change:
    """Whether an upsert creates, updates or leaves a record as it was."""
    if previous_fingerprint is None:
        return "created"
    return "unchanged" if previous_fingerprint == fingerprint else "updated"


def _opt(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _digest(values: list[Any]) -> str:
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
