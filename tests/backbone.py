"""A producer and a consumer service wired by a real transport, for backbone tests and benches."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import ClassVar

from sqlalchemy import Column, Integer, MetaData, String, Table, func, select

from mercato.platform.db import AutoIncrementId, Database
from mercato.platform.events import Envelope, EventPayload
from mercato.platform.events.consumer import EventConsumer
from mercato.platform.events.inprocess import InProcessTransport
from mercato.platform.events.relay import OutboxRelay
from mercato.platform.events.transport import ConsumerSpec, Subscription, Transport
from mercato.platform.migrations import upgrade
from mercato.platform.uow import UnitOfWork

effects_md = MetaData()
effects = Table(
    "effects",
    effects_md,
    Column("seq", AutoIncrementId, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("subject", String(100), nullable=False),
    Column("n", Integer, nullable=False),
)


class ThingHappened(EventPayload):
    """The test event."""

    event_type: ClassVar[str] = "thing.happened"
    n: int


class Harness:
    """Producer database → outbox relay → transport → consumer database with an effects table."""

    def __init__(
        self,
        producer_url: str,
        consumer_url: str,
        transport_kind: str,
        *,
        rabbitmq_url: str | None = None,
        kafka_url: str | None = None,
        retry_delays: tuple[float, ...] = (0.05, 0.1),
    ) -> None:
        self.producer = Database("producer", producer_url)
        self.consumer_db = Database("consumer", consumer_url)
        self.kind = transport_kind
        self.rabbitmq_url = rabbitmq_url
        self.kafka_url = kafka_url
        self.retry_delays = retry_delays
        self.failures: dict[str, int] = {}  # subject -> remaining failures (-1: always)
        self.attempts: Counter[str] = Counter()
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.transport: Transport = self.make_transport()
        self.consumer = EventConsumer(
            Subscription("consumer", {"thing.happened": self.handle}),
            self.consumer_db,
            retry_delays=retry_delays,
        )
        self.relay = OutboxRelay(self.producer, self.transport, batch_size=500, poll=0.2)

    def make_transport(self) -> Transport:
        if self.kind == "inprocess":
            return InProcessTransport(batch_size=200, poll=0.2)
        tag = uuid.uuid4().hex[:8]
        if self.kind == "kafka":
            from mercato.platform.events.kafka import KafkaTransport

            assert self.kafka_url is not None
            return KafkaTransport(self.kafka_url, topic=f"t{tag}.events", prefix=f"t{tag}")
        from mercato.platform.events.rabbitmq import RabbitMQTransport

        assert self.rabbitmq_url is not None
        return RabbitMQTransport(
            self.rabbitmq_url, exchange=f"t{tag}.events", queue_prefix=f"t{tag}"
        )

    async def handle(self, envelope: Envelope, uow: UnitOfWork) -> None:
        self.attempts[envelope.subject] += 1
        remaining = self.failures.get(envelope.subject, 0)
        if remaining:
            if remaining > 0:
                self.failures[envelope.subject] = remaining - 1
            raise RuntimeError(f"handler told to fail for {envelope.subject}")
        await uow.connection.execute(
            effects.insert().values(
                event_id=envelope.id, subject=envelope.subject, n=envelope.data["n"]
            )
        )

    async def setup(self) -> None:
        await upgrade(self.producer, [])
        await upgrade(self.consumer_db, [])
        async with self.consumer_db.transaction() as conn:
            await conn.run_sync(effects_md.create_all)
        await self.transport.start()
        self.runner = self.transport.runner(self.consumer)
        spec = ConsumerSpec.of(
            "consumer", ["thing.happened"], self.retry_delays, self.consumer_db.url
        )
        await self.transport.declare([spec])

    def start_consumer(self) -> None:
        self.tasks.append(asyncio.create_task(self.runner.run(self.stop)))

    def start_relay(self) -> None:
        self.tasks.append(asyncio.create_task(self.relay.run(self.stop)))

    async def emit(self, subject: str, n: int = 0) -> Envelope:
        async with UnitOfWork(self.producer, "producer", self.relay.wake) as uow:
            return await uow.emit(ThingHappened(n=n), subject=subject)

    async def emit_many(self, count: int, batch: int = 100, start: int = 0) -> list[Envelope]:
        """Emit events `start`…`start + count - 1`, each its own subject, `batch` per commit."""
        sent: list[Envelope] = []
        for first in range(start, start + count, batch):
            async with UnitOfWork(self.producer, "producer", self.relay.wake) as uow:
                for i in range(first, min(start + count, first + batch)):
                    sent.append(await uow.emit(ThingHappened(n=i), subject=f"s{i}"))
        return sent

    async def effect_counts(self) -> Counter[str]:
        async with self.consumer_db.read() as conn:
            rows = (
                await conn.execute(
                    select(effects.c.event_id, func.count()).group_by(effects.c.event_id)
                )
            ).all()
        return Counter({event_id: count for event_id, count in rows})

    async def wait_for(
        self, predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await predicate():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("condition not reached in time")

    async def wait_effects(self, expected: int, timeout: float = 20.0) -> Counter[str]:
        async def done() -> bool:
            # A count, not every row: polled every 50 ms, reading them all grew with the run and
            # took the CPU the pipeline under test needs (bench/events.py measures through this).
            async with self.consumer_db.read() as conn:
                applied = (await conn.execute(select(func.count()).select_from(effects))).scalar()
            return int(applied or 0) >= expected

        await self.wait_for(done, timeout)
        await asyncio.sleep(0.3)  # anything extra (a double apply) would land by now
        return await self.effect_counts()

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.transport.close()
        await self.producer.dispose()
        await self.consumer_db.dispose()
