"""Every delivery order of one order's events keeps DESIGN §4's invariants (exhaustive).

Random search finds a bad interleaving only by luck; here the tree of "which pending event is
delivered next" is walked completely for one order in each of the four outcomes (paid and in
stock, sold out, unpaid, both), with a crash of the first handler and a restart on the way.
Each path is replayed from scratch with fresh ids on the same databases.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mercato.platform.settings import Settings
from tests.harness import embedded_settings
from tests.saga_world import (
    Example,
    World,
    check_always,
    check_settled,
    plain_logs,
    run_step,
    setup_example,
)


@pytest.fixture(params=["sqlite", "postgres"])
def world_settings(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield embedded_settings(data_dir)
    else:
        yield embedded_settings(data_dir, database_url=request.getfixturevalue("pg_database_url"))


async def run_path(
    world: World, stock: int, funds: int, prefix: list[int]
) -> tuple[Example, list[int]]:
    """Place one order (1 x price 10) and deliver events until none is in flight: the choices
    of `prefix` first, then always the oldest. Answers the example and how many events were
    pending at each delivery (the tree's branching), so the caller can walk the siblings."""
    world.pending.clear()
    world.delivered.clear()
    ex = Example(users=[str(uuid.uuid4())])
    await setup_example(world, ex, [stock], funds=funds)
    await run_step(world, ex, ("place", 0, [(0, 1)]))
    branching: list[int] = []
    while world.pending:
        step = len(branching)
        choice = prefix[step] if step < len(prefix) else 0
        branching.append(len(world.pending))
        if step == 0:
            # The first handler crashes once before it commits: nothing of it may remain.
            await world.deliver(choice, crash=True)
            await check_always(world, ex)
            world.pending.insert(choice, world.pending.pop())
        if step == 2:
            await world.restart()
        await world.deliver(choice)
        await check_always(world, ex)
    return ex, branching


@pytest.mark.parametrize(
    ("stock", "funds", "outcome"),
    [(1, 100, "completed"), (0, 100, "out_of_stock"), (1, 0, "insufficient_funds"), (0, 0, None)],
)
async def test_every_delivery_order_of_one_order(
    world_settings: Settings, stock: int, funds: int, outcome: str | None
) -> None:
    world = World(world_settings)
    await world.start()
    paths, reasons = 0, set()
    with plain_logs():
        todo: list[list[int]] = [[]]
        while todo:
            prefix = todo.pop()
            ex, branching = await run_path(world, stock, funds, prefix)
            taken = prefix + [0] * (len(branching) - len(prefix))
            for depth in range(len(prefix), len(branching)):
                todo.extend([*taken[:depth], i] for i in range(1, branching[depth]))
            await check_settled(world, ex)
            paths += 1
            reasons.add(await final_reason(world, ex))
    await world.stop()
    assert paths >= 6
    if outcome is not None:
        assert reasons == {outcome}
    else:  # both refuse: whichever answer orders records first decides
        assert reasons == {"out_of_stock", "insufficient_funds"}


async def final_reason(world: World, ex: Example) -> str:
    from sqlalchemy import select

    from mercato.orders.store import orders

    async with world.db("orders").read() as conn:
        status, reason = (
            await conn.execute(
                select(orders.c.status, orders.c.fail_reason).where(orders.c.id == ex.orders[0])
            )
        ).one()
    return str(reason) if status == "failed" else str(status)
