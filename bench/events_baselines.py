"""Baselines for `bench/events.py` (issue 10), each on fresh state handed in by the caller:

- bare aio-pika: persistent, confirmed publishes to a durable quorum queue, consumed with acks;
- FastStream (RabbitMQ broker): publish + subscribe of the same messages, persistent, confirmed;
- a plain asyncpg + aio-pika outbox/inbox with Mercato's guarantees and none of its layers:
  the outbox row inserted in the business transaction, a relay publishing with publisher
  confirms and marking rows sent after the confirms, a consumer that inserts the inbox row
  (dedupe) and the effect in one transaction and acks only after the commit.

Each answers the seconds from the first emit or publish to the last effect or receipt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage


def quorum_queue_arguments() -> dict[str, Any]:
    """Mercato's queue kind: durable, replicated on a quorum."""
    return {"x-queue-type": "quorum"}


async def bare_rabbit(url: str, count: int) -> float:
    """Seconds to publish `count` persistent, confirmed messages and consume them with acks."""
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=256)
        queue = await channel.declare_queue(
            f"bench-{uuid.uuid4().hex[:8]}", durable=True, arguments=quorum_queue_arguments()
        )
        done = asyncio.Event()
        received = 0

        async def on_message(message: AbstractIncomingMessage) -> None:
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


async def faststream_rabbit(url: str, count: int) -> float:
    """Seconds for FastStream to publish `count` persistent messages (publisher confirms, its
    default) and its subscriber to receive them all (acked after the handler, its default)."""
    from faststream.rabbit import Channel, QueueType, RabbitBroker, RabbitQueue

    broker = RabbitBroker(url, default_channel=Channel(prefetch_count=256), logger=None)
    queue = RabbitQueue(
        f"bench-fs-{uuid.uuid4().hex[:8]}", durable=True, queue_type=QueueType.QUORUM
    )
    done = asyncio.Event()
    received = 0

    @broker.subscriber(queue)
    async def on_message(body: dict[str, int]) -> None:
        nonlocal received
        received += 1
        if received >= count:
            done.set()

    async with broker:
        await broker.start()
        started = time.perf_counter()
        for start in range(0, count, 500):
            await asyncio.gather(
                *(
                    broker.publish({"n": i}, queue=queue, persist=True)
                    for i in range(start, min(count, start + 500))
                )
            )
        await asyncio.wait_for(done.wait(), timeout=600)
        return time.perf_counter() - started


_SCHEMA = """
CREATE TABLE outbox (
  seq BIGSERIAL PRIMARY KEY, id UUID NOT NULL UNIQUE, type TEXT NOT NULL,
  payload TEXT NOT NULL, sent_at TIMESTAMPTZ
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
CREATE TABLE inbox (
  consumer TEXT NOT NULL, event_id UUID NOT NULL, PRIMARY KEY (consumer, event_id)
);
CREATE TABLE effects (seq BIGSERIAL PRIMARY KEY, event_id UUID NOT NULL, n INTEGER NOT NULL);
"""


async def plain_outbox_inbox(pg_dsn: str, rabbit_url: str, count: int) -> float:
    """Seconds to emit `count` events (100 per business transaction) through a hand-written
    asyncpg outbox, relay and aio-pika inbox consumer (see the module's docstring) until every
    effect is committed."""
    pool = await asyncpg.create_pool(pg_dsn, min_size=2, max_size=8)
    connection = await aio_pika.connect_robust(rabbit_url)
    stop = asyncio.Event()
    wake = asyncio.Event()
    applied = 0
    done = asyncio.Event()
    try:
        async with pool.acquire() as conn:
            await conn.execute(_SCHEMA)
        publish_channel = await connection.channel(publisher_confirms=True)
        exchange = await publish_channel.declare_exchange(
            f"plain-{uuid.uuid4().hex[:8]}", aio_pika.ExchangeType.TOPIC, durable=True
        )
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=256)
        queue = await consume_channel.declare_queue(
            f"plain-{uuid.uuid4().hex[:8]}", durable=True, arguments=quorum_queue_arguments()
        )
        await queue.bind(exchange.name, routing_key="thing.#")

        async def relay() -> None:
            while not stop.is_set():
                async with pool.acquire() as conn, conn.transaction():
                    rows = await conn.fetch(
                        "SELECT id, type, payload FROM outbox WHERE sent_at IS NULL "
                        "ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED"
                    )
                    if rows:
                        # Confirmed by the broker before the rows are marked sent.
                        await asyncio.gather(
                            *(
                                exchange.publish(
                                    aio_pika.Message(
                                        row["payload"].encode(),
                                        message_id=str(row["id"]),
                                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                    ),
                                    routing_key=row["type"],
                                )
                                for row in rows
                            )
                        )
                        await conn.execute(
                            "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::uuid[])",
                            [row["id"] for row in rows],
                        )
                if not rows:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), timeout=0.2)

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal applied
            event_id = uuid.UUID(message.message_id or "")
            data = json.loads(message.body)
            async with pool.acquire() as conn, conn.transaction():
                fresh = await conn.fetchval(
                    "INSERT INTO inbox (consumer, event_id) VALUES ('consumer', $1) "
                    "ON CONFLICT DO NOTHING RETURNING 1",
                    event_id,
                )
                if fresh:
                    await conn.execute(
                        "INSERT INTO effects (event_id, n) VALUES ($1, $2)", event_id, data["n"]
                    )
            await message.ack()  # after the commit: a crash before it redelivers, deduped
            if fresh:
                applied += 1
                if applied >= count:
                    done.set()

        await queue.consume(on_message)
        relaying = asyncio.create_task(relay())
        started = time.perf_counter()
        for start in range(0, count, 100):
            async with pool.acquire() as conn, conn.transaction():
                await conn.executemany(
                    "INSERT INTO outbox (id, type, payload) VALUES ($1, $2, $3)",
                    [
                        (uuid.uuid4(), "thing.happened", json.dumps({"n": i}))
                        for i in range(start, min(count, start + 100))
                    ],
                )
            wake.set()  # the relay is woken on commit, as Mercato's is
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - started
        stop.set()
        wake.set()
        await relaying
        return elapsed
    finally:
        await connection.close()
        await pool.close()
