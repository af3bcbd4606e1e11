"""Events per second through outbox -> transport -> inbox, next to bare baselines.

Run with `make bench` (or `python bench/events.py [--events N]`). Prints figures and ratios; it
never fails on time. Needs PostgreSQL and RabbitMQ on localhost for the distributed rows (skipped
with a note when absent).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika
from sqlalchemy import Column, Integer, MetaData, String, Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import services
from tests.backbone import Harness

from mercato.platform.db import AutoIncrementId, Database

bare_md = MetaData()
bare = Table(
    "bare_rows",
    bare_md,
    Column("seq", AutoIncrementId, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("n", Integer, nullable=False),
)


async def through_backbone(
    producer_url: str, consumer_url: str, kind: str, count: int, rabbit: str | None
) -> float:
    """Seconds to emit `count` events (100 per transaction) and see every effect applied."""
    harness = Harness(producer_url, consumer_url, kind, rabbitmq_url=rabbit)
    await harness.setup()
    harness.start_consumer()
    harness.start_relay()
    try:
        started = time.perf_counter()
        await harness.emit_many(count, batch=100)
        await harness.wait_effects(count, timeout=600)
        # wait_effects sleeps 0.3 s after the last effect to catch doubles; not part of the rate.
        return time.perf_counter() - started - 0.3
    finally:
        await harness.close()


async def bare_inserts(url: str, count: int) -> float:
    """Seconds to insert `count` rows, 100 per transaction: the floor of any outbox."""
    database = Database("bare", url)
    await database.ensure_schema()
    async with database.transaction() as conn:
        await conn.run_sync(bare_md.create_all)
    try:
        started = time.perf_counter()
        for start in range(0, count, 100):
            async with database.transaction() as conn:
                await conn.execute(
                    bare.insert(),
                    [{"event_id": str(uuid.uuid4()), "n": i} for i in range(start, start + 100)],
                )
        return time.perf_counter() - started
    finally:
        await database.dispose()


async def bare_rabbit(url: str, count: int) -> float:
    """Seconds to publish `count` persistent, confirmed messages and consume them with acks."""
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=256)
        queue = await channel.declare_queue(
            f"bench-{uuid.uuid4().hex[:8]}", durable=True, arguments={"x-queue-type": "quorum"}
        )
        done = asyncio.Event()
        received = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received >= count:
                done.set()

        await queue.consume(on_message)
        started = time.perf_counter()
        for start in range(0, count, 500):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            b'{"n": %d}' % i, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                        ),
                        routing_key=queue.name,
                    )
                    for i in range(start, min(count, start + 500))
                )
            )
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - started
        await queue.delete(if_unused=False, if_empty=False)
        return elapsed
    finally:
        await connection.close()


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>9,.0f} events/s"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    count = parser.parse_args().events
    tmp = Path(tempfile.mkdtemp(prefix="mercato-bench-"))
    have_pg = services.port_open("127.0.0.1", 5432)
    have_rabbit = services.port_open(services.RABBIT_HOST, 5672)
    pg_url = (
        await asyncio.to_thread(
            services.create_pg_database, f"mercato_bench_{uuid.uuid4().hex[:8]}"
        )
        if have_pg
        else None
    )
    vhost = f"mercato-bench-{uuid.uuid4().hex[:8]}"
    rabbit = services.create_vhost(vhost) if have_rabbit else None

    print(f"bench/events.py: {count} events, 100 per transaction, on this machine")
    rows: list[tuple[str, float | None, str, float | None]] = []

    def sqlite_pair(tag: str) -> tuple[str, str]:
        return (
            f"sqlite+aiosqlite:///{tmp / f'{tag}-producer.db'}",
            f"sqlite+aiosqlite:///{tmp / f'{tag}-consumer.db'}",
        )

    sqlite_bare = await bare_inserts(f"sqlite+aiosqlite:///{tmp / 'bare.db'}", count)
    pg_bare = await bare_inserts(pg_url, count) if pg_url else None
    rabbit_bare = await bare_rabbit(rabbit, count) if rabbit else None

    rows.append(
        (
            "SQLite + in-process",
            await through_backbone(*sqlite_pair("a"), "inprocess", count, None),
            "bare SQLite inserts",
            sqlite_bare,
        )
    )
    if pg_url:
        rows.append(
            (
                "PostgreSQL + in-process",
                await through_backbone(pg_url, pg_url, "inprocess", count, None),
                "bare PostgreSQL inserts",
                pg_bare,
            )
        )
    if rabbit:
        rows.append(
            (
                "SQLite + RabbitMQ",
                await through_backbone(*sqlite_pair("b"), "rabbitmq", count, rabbit),
                "bare aio-pika publish+consume",
                rabbit_bare,
            )
        )
    if pg_url and rabbit:
        rows.append(
            (
                "PostgreSQL + RabbitMQ",
                await through_backbone(pg_url, pg_url, "rabbitmq", count, rabbit),
                "bare aio-pika publish+consume",
                rabbit_bare,
            )
        )
    print(f"{'path':<26}{'mercato':>20}   {'baseline':<32}{'baseline rate':>20}  ratio")
    for name, seconds, base_name, base_seconds in rows:
        assert seconds is not None
        base = rate(count, base_seconds) if base_seconds else "n/a"
        ratio = f"{base_seconds / seconds:6.2f}" if base_seconds else "  n/a"
        print(f"{name:<26}{rate(count, seconds):>20}   {base_name:<32}{base:>20}  {ratio}")
    print(
        "aims (issue 2): >= 2,000 events/s SQLite embedded; >= 1,000 events/s PostgreSQL+RabbitMQ"
    )
    if not have_pg:
        print("note: PostgreSQL not reachable, its rows were skipped")
    if not have_rabbit:
        print("note: RabbitMQ not reachable, its rows were skipped")
    if rabbit:
        services.delete_vhost(vhost)
    if pg_url:
        await asyncio.to_thread(services.drop_pg_database, pg_url.rsplit("/", 1)[1])


if __name__ == "__main__":
    asyncio.run(main())
