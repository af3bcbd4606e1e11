"""catalog, wallet and orders on real databases with a hand-driven network between them.

Every event their outboxes commit joins a pool of deliveries; a test decides which is
delivered next (so wallet's and catalog's answers, and `order.failed` versus `order.placed`,
arrive in any order), delivers one again, crashes a consumer mid-handler (its transaction rolls
back) or restarts every service. `check_always` holds at every moment; `check_settled` once
nothing is in flight.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mercato.accounts.contracts import UserCreated, UserDeleted
from mercato.app import build_platform
from mercato.catalog import service as catalog_service
from mercato.catalog.store import products, reservations
from mercato.orders import service as orders_service
from mercato.orders.store import order_lines, orders
from mercato.platform.clock import utcnow
from mercato.platform.errors import DomainError
from mercato.platform.events import Envelope, make_envelope
from mercato.platform.events.consumer import Outcome
from mercato.platform.events.tables import outbox
from mercato.platform.runtime import Platform
from mercato.platform.settings import Settings
from mercato.wallet import service as wallet_service
from mercato.wallet.store import ledger, payments, wallets

SERVICES = ["catalog", "wallet", "orders"]
USERS, PRODUCTS = 3, 2


class Crash(Exception):
    """The consumer 'dies' before its transaction commits."""


@dataclass
class Example:
    """The ids of one example, and what the test itself did (the model)."""

    users: list[str] = field(default_factory=lambda: [str(uuid.uuid4()) for _ in range(USERS)])
    products: list[str] = field(default_factory=list)
    initial_stock: dict[str, int] = field(default_factory=dict)
    topped_up: Counter[str] = field(default_factory=Counter)
    orders: list[str] = field(default_factory=list)


@contextmanager
def plain_logs() -> Iterator[None]:
    """Render logs as plain key=value lines: the simulated crashes log tracebacks, and the
    console renderer's pretty tracebacks would cost more than the saga itself."""
    saved = structlog.get_config()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(key_order=["level", "event"]),
        ]
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


class World:
    """The three services on their databases, with a hand-driven network between them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.platform: Platform = build_platform(settings, SERVICES)
        self.pending: list[tuple[str, Envelope]] = []
        self.delivered: list[tuple[str, Envelope]] = []

    async def start(self) -> None:
        await self.platform.migrate()

    async def restart(self) -> None:
        """Every service process stops and starts again; committed state and the events in
        flight survive, nothing in memory does."""
        await self.platform.stop()
        self.platform = build_platform(self.settings, SERVICES)

    async def stop(self) -> None:
        await self.platform.stop()

    async def collect(self) -> None:
        """Move newly committed outbox events into the pool, one delivery per subscriber."""
        for database in self.platform.databases.values():
            async with database.transaction() as conn:
                rows = (
                    await conn.execute(
                        select(outbox.c.seq, outbox.c.envelope)
                        .where(outbox.c.sent_at.is_(None))
                        .order_by(outbox.c.seq)
                    )
                ).all()
                if rows:
                    await conn.execute(
                        update(outbox)
                        .where(outbox.c.seq.in_([seq for seq, _ in rows]))
                        .values(sent_at=utcnow())
                    )
            for _, raw in rows:
                self.publish(Envelope.from_json(raw))

    def publish(self, envelope: Envelope) -> None:
        for name, consumer in self.platform.consumers.items():
            if envelope.type in consumer.subscription.event_types:
                self.pending.append((name, envelope))

    async def deliver(self, index: int, *, crash: bool = False) -> None:
        if not self.pending:
            return
        name, envelope = self.pending.pop(index % len(self.pending))

        async def die(_: AsyncConnection) -> None:
            raise Crash("consumer killed before commit")

        result = await self.platform.consumers[name].handle(
            envelope, 0, in_transaction=die if crash else None
        )
        if result.outcome is Outcome.RETRY:
            assert crash, result.error
            self.pending.append((name, envelope))  # the broker hands it out again
        else:
            assert result.outcome is Outcome.DONE, result
            self.delivered.append((name, envelope))
        await self.collect()

    async def redeliver(self, index: int) -> None:
        if not self.delivered:
            return
        name, envelope = self.delivered[index % len(self.delivered)]
        result = await self.platform.consumers[name].handle(envelope, 0)
        assert result.outcome is Outcome.DUPLICATE, result
        await self.collect()

    async def drain(self, policy: str = "fifo", rng: random.Random | None = None) -> None:
        """Deliver until nothing is in flight: oldest first, newest first, or shuffled."""
        for _ in range(10_000):
            if not self.pending:
                return
            if policy == "random" and rng is not None:
                await self.deliver(rng.randrange(len(self.pending)))
            else:
                await self.deliver(-1 if policy == "lifo" else 0)
        raise AssertionError("events keep coming: a loop in the saga")

    def uow(self, service: str) -> Any:
        return self.platform.contexts[service].uow

    def db(self, service: str) -> Any:
        return self.platform.databases[service]


# --- steps --------------------------------------------------------------------------------


async def setup_example(world: World, ex: Example, stocks: list[int], funds: int = 30) -> None:
    """Users (by `user.created`), products with `stocks`, and `funds` for all users but the
    last (of several); everything delivered."""
    for user_id in ex.users:
        world.publish(
            make_envelope(
                UserCreated(
                    user_id=user_id,
                    username=f"u{user_id[:8]}",
                    email=f"{user_id[:8]}@example.com",
                    roles=["user"],
                    password_hash="$argon2id$unused",
                    occurred_at=utcnow(),
                ),
                source="accounts",
                subject=user_id,
            )
        )
    for index, initial in enumerate(stocks):
        product = await catalog_service.create_product(
            world.uow("catalog"),
            {"name": f"Book {index}", "price": Decimal(10 + 15 * index), "stock": initial},
        )
        ex.products.append(product.id)
        ex.initial_stock[product.id] = initial
    await world.collect()
    await world.drain()
    # Most users can pay, so a debit that should not happen would succeed and show.
    # The last user (of several) stays penniless, so unpaid orders happen too.
    for user_id in (ex.users[:-1] or ex.users) if funds else []:
        await wallet_service.top_up(
            world.uow("wallet"), wallet_service.TopUp(user_id, user_id, Decimal(funds), None)
        )
        ex.topped_up[user_id] += funds


async def run_step(world: World, ex: Example, step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "place":
        _, user, lines = step
        items = [(ex.products[p], q) for p, q in lines]
        order = await orders_service.place_order(
            world.uow("orders"), orders_service.Placement(ex.users[user], items)
        )
        ex.orders.append(order.id)
    elif kind == "topup":
        _, user, amount = step
        try:
            await wallet_service.top_up(
                world.uow("wallet"),
                wallet_service.TopUp(ex.users[user], ex.users[user], Decimal(amount), None),
            )
            ex.topped_up[ex.users[user]] += int(amount)
        except DomainError:
            pass  # a deleted user's wallet is closed
    elif kind == "deliver":
        await world.deliver(step[1])
    elif kind == "newest":
        # Last in, first out: answers overtake what caused them, the harshest reordering.
        await world.deliver(-1)
    elif kind == "crash":
        await world.deliver(step[1], crash=True)
    elif kind == "duplicate":
        await world.redeliver(step[1])
    elif kind == "restart":
        await world.restart()
    elif kind == "delete_user":
        user_id = ex.users[step[1]]
        world.publish(
            make_envelope(
                UserDeleted(user_id=user_id, version=2, occurred_at=utcnow()),
                source="accounts",
                subject=user_id,
            )
        )
    await world.collect()


# --- invariants ---------------------------------------------------------------------------


async def check_always(world: World, ex: Example) -> None:
    """What holds at every moment, whatever is still in flight (for this example's ids; the
    database refuses negative balances and stock everywhere by its check constraints)."""
    async with world.db("wallet").read() as conn:
        rows = await conn.execute(
            select(wallets.c.user_id, wallets.c.balance).where(wallets.c.user_id.in_(ex.users))
        )
        sums = dict(
            (
                await conn.execute(
                    select(ledger.c.user_id, func.sum(ledger.c.amount))
                    .where(ledger.c.user_id.in_(ex.users))
                    .group_by(ledger.c.user_id)
                )
            ).all()
        )
        for user_id, balance in rows:
            assert balance >= 0
            assert balance == (sums.get(user_id) or Decimal("0.00")), user_id
        entries = Counter(
            (
                await conn.execute(
                    select(ledger.c.order_id, ledger.c.kind).where(ledger.c.order_id.in_(ex.orders))
                )
            ).all()
        )
        states = dict(
            (
                await conn.execute(
                    select(payments.c.order_id, payments.c.state).where(
                        payments.c.order_id.in_(ex.orders)
                    )
                )
            ).all()
        )
    for order_id, state in states.items():
        debits, refunds = entries[(order_id, "debit")], entries[(order_id, "refund")]
        expected = {"debited": (1, 0), "refunded": (1, 1)}.get(state, (0, 0))
        assert (debits, refunds) == expected, (order_id, state)
    async with world.db("catalog").read() as conn:
        stock = dict(
            (
                await conn.execute(
                    select(products.c.id, products.c.stock).where(products.c.id.in_(ex.products))
                )
            ).all()
        )
        held = (
            await conn.execute(
                select(reservations.c["items"]).where(
                    reservations.c.state == "reserved", reservations.c.order_id.in_(ex.orders)
                )
            )
        ).all()
    assert all(v >= 0 for v in stock.values())
    taken: Counter[str] = Counter()
    for (items,) in held:
        taken.update(json.loads(items))
    for product_id, initial in ex.initial_stock.items():
        assert stock[product_id] + taken[product_id] == initial, product_id


async def check_settled(world: World, ex: Example) -> None:
    """Once every event is delivered: each order ended, and only completed ones took anything."""
    async with world.db("orders").read() as conn:
        found = {
            r.id: r
            for r in (await conn.execute(select(orders).where(orders.c.id.in_(ex.orders)))).all()
        }
        lines = (
            await conn.execute(select(order_lines).where(order_lines.c.order_id.in_(ex.orders)))
        ).all()
    async with world.db("wallet").read() as conn:
        paid = dict(
            (
                await conn.execute(
                    select(payments.c.order_id, payments.c.state).where(
                        payments.c.order_id.in_(ex.orders)
                    )
                )
            ).all()
        )
        balances = dict(
            (
                await conn.execute(
                    select(wallets.c.user_id, wallets.c.balance).where(
                        wallets.c.user_id.in_(ex.users)
                    )
                )
            ).all()
        )
    async with world.db("catalog").read() as conn:
        reserved = dict(
            (
                await conn.execute(
                    select(reservations.c.order_id, reservations.c.state).where(
                        reservations.c.order_id.in_(ex.orders)
                    )
                )
            ).all()
        )
        stock = dict(
            (
                await conn.execute(
                    select(products.c.id, products.c.stock).where(products.c.id.in_(ex.products))
                )
            ).all()
        )
    spent: Counter[str] = Counter()
    sold: Counter[str] = Counter()
    for order_id in ex.orders:
        order = found[order_id]
        assert order.status in ("completed", "failed"), order
        if order.status == "completed":
            assert paid[order_id] == "debited" and reserved[order_id] == "reserved"
            assert order.payment == "debited" and order.stock == "reserved"
            spent[order.user_id] += order.total
        else:
            assert order.fail_reason
            assert paid.get(order_id) in ("rejected", "refunded", "cancelled")
            assert reserved.get(order_id) in ("rejected", "released", "cancelled")
    for line in lines:
        if found[line.order_id].status == "completed":
            sold[line.product_id] += line.quantity
    for user_id in ex.users:
        expected = Decimal(ex.topped_up[user_id]) - spent[user_id]
        assert balances.get(user_id, Decimal("0.00")) == expected, user_id
    for product_id, initial in ex.initial_stock.items():
        assert stock[product_id] == initial - sold[product_id], product_id
