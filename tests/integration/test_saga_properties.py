"""DESIGN §4's invariants under any interleaving, on SQLite and on PostgreSQL (hypothesis).

catalog, wallet and orders run on real databases with their real `EventConsumer`s, but the
network between them is ours: every event their outboxes commit joins a pool of deliveries,
and hypothesis decides what happens next — place an order, top up, deliver any pending event
(so wallet's and catalog's answers, and `order.failed` versus `order.placed`, arrive in any
order), deliver an already delivered one again, crash a consumer mid-handler (its transaction
rolls back), restart every service, delete a user. The invariants that must hold at every
moment are checked after each step; the ones about outcomes once everything is delivered.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mercato.platform.settings import Settings
from tests.harness import embedded_settings
from tests.saga_world import (
    PRODUCTS,
    USERS,
    Example,
    World,
    check_always,
    check_settled,
    plain_logs,
    run_step,
    setup_example,
)

EXAMPLES = int(os.environ.get("MERCATO_TEST_SAGA_EXAMPLES", "40"))

# --- the test -----------------------------------------------------------------------------

index = st.integers(0, 1_000)
place = st.tuples(
    st.just("place"),
    st.integers(0, USERS - 1),
    st.lists(st.tuples(st.integers(0, PRODUCTS - 1), st.integers(1, 3)), min_size=1, max_size=3),
)
step = st.one_of(
    place,
    place,
    st.tuples(st.just("topup"), st.integers(0, USERS - 1), st.sampled_from(["10", "40"])),
    st.tuples(st.just("deliver"), index),
    st.tuples(st.just("deliver"), index),
    st.tuples(st.just("deliver"), index),
    st.tuples(st.just("newest")),
    st.tuples(st.just("newest")),
    st.tuples(st.just("duplicate"), index),
    st.tuples(st.just("crash"), index),
    st.tuples(st.just("restart")),
    st.tuples(st.just("delete_user"), st.integers(0, USERS - 1)),
)
# Every plan places something first: a plan without orders exercises nothing.
steps = st.tuples(st.lists(place, min_size=1, max_size=4), st.lists(step, max_size=40)).map(
    lambda parts: parts[0] + parts[1]
)


@pytest.fixture(params=["sqlite", "postgres"])
def world_settings(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield embedded_settings(data_dir)
    else:
        yield embedded_settings(data_dir, database_url=request.getfixturevalue("pg_database_url"))


def test_saga_invariants_hold_under_any_interleaving(world_settings: Settings) -> None:
    # One event loop and one set of databases for every example; examples use fresh ids, so
    # they never see each other's users, products or orders.
    loop = asyncio.new_event_loop()
    world = World(world_settings)
    loop.run_until_complete(world.start())
    try:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            stocks=st.lists(st.integers(0, 4), min_size=PRODUCTS, max_size=PRODUCTS),
            plan=steps,
            drain=st.sampled_from(["fifo", "lifo", "random"]),
            rng=st.randoms(use_true_random=False),
        )
        def example(
            stocks: list[int], plan: list[tuple[Any, ...]], drain: str, rng: random.Random
        ) -> None:
            async def run() -> None:
                # Each example starts with an empty network, so a replay is the same run.
                world.pending.clear()
                world.delivered.clear()
                ex = Example()
                await setup_example(world, ex, stocks)
                for step in plan:
                    await run_step(world, ex, step)
                    await check_always(world, ex)
                await world.drain(drain, rng)
                await check_always(world, ex)
                await check_settled(world, ex)

            loop.run_until_complete(run())

        with plain_logs():
            example()
    finally:
        loop.run_until_complete(world.stop())
        loop.close()
