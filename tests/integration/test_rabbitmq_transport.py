"""The RabbitMQ transport against a real broker: at-least-once delivery, exactly-once effects."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aio_pika
import pytest
from aio_pika.exceptions import ChannelNotFoundEntity
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select

from mercato.platform.db import Database
from mercato.platform.events.consumer import (
    BatchTransaction,
    Delivery,
    EventConsumer,
    InTransaction,
    Outcome,
)
from mercato.platform.events.envelope import Envelope, EventPayload
from mercato.platform.events.rabbitmq import PublishFailedError, RabbitMQTransport
from mercato.platform.events.rabbitmq_consumer import RabbitMQConsumerRunner
from mercato.platform.events.relay import OutboxRelay
from mercato.platform.events.tables import dead_letters, inbox
from mercato.platform.events.transport import Handler, Subscription
from mercato.platform.migrations import upgrade
from mercato.platform.uow import UnitOfWork

pytestmark = pytest.mark.rabbitmq

DELAYS = (0.05, 0.1, 0.2)

test_metadata = MetaData()
# Deliberately no unique constraint: a second application of an event shows up as a second row.
effects = Table(
    "test_effects",
    test_metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("subject", String(100), nullable=False),
)


class ThingHappened(EventPayload):
    """The test event."""

    event_type: ClassVar[str] = "thing.happened"
    n: int


async def record_effect(envelope: Envelope, uow: UnitOfWork) -> None:
    """The default handler: one row per application."""
    await uow.connection.execute(
        effects.insert().values(event_id=envelope.id, subject=envelope.subject)
    )


class RecordingConsumer(EventConsumer):
    """An EventConsumer that remembers every delivery's outcome, so tests can wait on them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: list[tuple[str, Outcome]] = []

    async def handle(
        self, envelope: Envelope, attempt: int, in_transaction: InTransaction | None = None
    ) -> Delivery:
        result = await super().handle(envelope, attempt, in_transaction)
        self.outcomes.append((envelope.id, result.outcome))
        return result

    async def handle_batch(
        self, envelopes: Sequence[Envelope], in_transaction: BatchTransaction | None = None
    ) -> list[Delivery | None]:
        results = await super().handle_batch(envelopes, in_transaction)
        self.outcomes += [
            (env.id, r.outcome) for env, r in zip(envelopes, results, strict=True) if r is not None
        ]
        return results

    def outcomes_of(self, event_id: str) -> list[Outcome]:
        return [outcome for eid, outcome in self.outcomes if eid == event_id]


@dataclass
class Stack:
    """A producer outbox, its relay, the transport and one consuming service, all running."""

    url: str
    db: Database
    transport: RabbitMQTransport
    consumer: RecordingConsumer
    runner: RabbitMQConsumerRunner
    relay: OutboxRelay
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def emit(self, count: int, subject: str = "s", start: int = 0) -> list[Envelope]:
        """Commit `count` events to the producer's outbox in one transaction."""
        async with UnitOfWork(self.db, "producer", self.relay.wake) as uow:
            return [
                await uow.emit(ThingHappened(n=start + i), subject=subject) for i in range(count)
            ]

    async def effect_counts(self) -> Counter[str]:
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(effects.c.event_id, func.count()).group_by(effects.c.event_id)
                )
            ).all()
        return Counter({event_id: n for event_id, n in rows})

    async def dead_letters(self) -> list[Any]:
        async with self.db.read() as conn:
            return list((await conn.execute(select(dead_letters))).all())

    async def inbox_size(self) -> int:
        async with self.db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(inbox))).scalar_one())


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "condition"
) -> None:
    """Poll `check` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def queue_state(url: str, queue: str) -> tuple[int, int] | None:
    """(messages ready, consumers) of a queue, or None when it does not exist."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except ChannelNotFoundEntity:
            return None
        result = declared.declaration_result
        return result.message_count or 0, result.consumer_count or 0
    finally:
        await connection.close()


async def wait_consuming(url: str, queue: str) -> None:
    """Wait until the runner declared, bound and started consuming its queue."""

    async def consuming() -> bool:
        state = await queue_state(url, queue)
        return state is not None and state[1] > 0

    await eventually(consuming, what=f"a consumer on {queue}")


@asynccontextmanager
async def running_stack(
    rabbitmq_url: str,
    database_url: str,
    handler: Handler = record_effect,
    *,
    delays: Sequence[float] = DELAYS,
    relay_task: bool = False,
) -> AsyncIterator[Stack]:
    """Migrate the database, start transport and runner (and optionally the relay loop)."""
    # Fast reconnects keep the broker-restart test short; the transport honours URL options.
    url = f"{rabbitmq_url}?reconnect_interval=0.5"
    tag = uuid.uuid4().hex[:8]
    db = Database("svc", database_url)
    await upgrade(db, [])
    async with db.engine.begin() as conn:
        await conn.run_sync(test_metadata.create_all)
    transport = RabbitMQTransport(url, exchange=f"ex-{tag}", queue_prefix=f"q-{tag}")
    await transport.start()
    consumer = RecordingConsumer(
        Subscription("svc", {ThingHappened.event_type: handler}), db, retry_delays=delays
    )
    runner = transport.runner(consumer)
    relay = OutboxRelay(db, transport, poll=0.2)
    stack = Stack(url, db, transport, consumer, runner, relay)
    stack.tasks.append(asyncio.create_task(runner.run(stack.stop)))
    if relay_task:
        stack.tasks.append(asyncio.create_task(relay.run(stack.stop)))
    try:
        await wait_consuming(url, runner.queue_name)
        yield stack
    finally:
        stack.stop.set()
        await asyncio.wait_for(asyncio.gather(*stack.tasks), timeout=30)
        await transport.close()
        await db.dispose()


async def test_published_events_are_applied_once(rabbitmq_url: str, database_url: str) -> None:
    async with running_stack(rabbitmq_url, database_url) as stack:
        # A probe queue on the exchange shows what goes over the wire.
        probe_conn = await aio_pika.connect(stack.url)
        probe_channel = await probe_conn.channel()
        probe = await probe_channel.declare_queue(exclusive=True)
        await probe.bind(stack.transport.exchange_name, routing_key=ThingHappened.event_type)

        sent = await stack.emit(20)
        assert await stack.relay.run_once() == 20

        async def all_applied() -> bool:
            return sum((await stack.effect_counts()).values()) >= 20

        await eventually(all_applied, what="20 effects")
        counts = await stack.effect_counts()
        assert counts == Counter({env.id: 1 for env in sent})
        assert [o for _, o in stack.consumer.outcomes] == [Outcome.DONE] * 20
        # Sequential consumption keeps the queue's order.
        assert [eid for eid, _ in stack.consumer.outcomes] == [env.id for env in sent]

        wire = await probe.get(timeout=5)
        assert wire.message_id == sent[0].id
        assert wire.routing_key == ThingHappened.event_type
        assert wire.content_type == "application/json"
        assert wire.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert Envelope.from_json(wire.body) == sent[0]
        await probe_conn.close()
        assert await stack.relay.run_once() == 0


async def test_same_event_published_twice_is_applied_once(
    rabbitmq_url: str, database_url: str
) -> None:
    async with running_stack(rabbitmq_url, database_url) as stack:
        [env] = await stack.emit(1)
        await stack.relay.run_once()
        await stack.transport.publish([env, env])  # one batch: sent once
        await stack.transport.publish([env])

        async def three_deliveries() -> bool:
            return len(stack.consumer.outcomes_of(env.id)) >= 3

        await eventually(three_deliveries, what="three deliveries")
        await asyncio.sleep(0.3)  # room for an unexpected fourth
        assert stack.consumer.outcomes_of(env.id) == [
            Outcome.DONE,
            Outcome.DUPLICATE,
            Outcome.DUPLICATE,
        ]
        assert await stack.effect_counts() == Counter({env.id: 1})


async def test_handler_failing_twice_then_succeeding_is_applied_once(
    rabbitmq_url: str, database_url: str
) -> None:
    calls: Counter[str] = Counter()

    async def flaky(envelope: Envelope, uow: UnitOfWork) -> None:
        calls[envelope.id] += 1
        if calls[envelope.id] <= 2:
            raise RuntimeError("not yet")
        await record_effect(envelope, uow)

    async with running_stack(rabbitmq_url, database_url, flaky) as stack:
        sent = await stack.emit(3)
        started = time.monotonic()
        await stack.relay.run_once()

        async def applied() -> bool:
            return len(await stack.effect_counts()) == 3

        await eventually(applied, what="3 effects after retries")
        # Two failures wait at least the first two delays before the third attempt.
        assert time.monotonic() - started >= DELAYS[0] + DELAYS[1]
        assert await stack.effect_counts() == Counter({env.id: 1 for env in sent})
        for env in sent:
            assert stack.consumer.outcomes_of(env.id) == [
                Outcome.RETRY,
                Outcome.RETRY,
                Outcome.DONE,
            ]
        assert await stack.dead_letters() == []


async def test_always_failing_event_is_dead_lettered_and_replayable(
    rabbitmq_url: str, database_url: str
) -> None:
    broken = True

    async def picky(envelope: Envelope, uow: UnitOfWork) -> None:
        if broken and envelope.subject == "poison":
            raise ValueError("cannot handle poison")
        await record_effect(envelope, uow)

    async with running_stack(rabbitmq_url, database_url, picky) as stack:
        [poison] = await stack.emit(1, subject="poison")
        good = await stack.emit(5, subject="good")
        await stack.relay.run_once()

        async def good_applied() -> bool:
            counts = await stack.effect_counts()
            return all(counts[env.id] == 1 for env in good)

        async def buried() -> bool:
            return len(await stack.dead_letters()) == 1

        # The events behind the failing one are not held up by its retries.
        await eventually(good_applied, what="the events behind the poison one")
        await eventually(buried, what="a dead letter")
        [letter] = await stack.dead_letters()
        assert letter.event_id == poison.id
        assert letter.attempts == len(DELAYS) + 1
        assert "cannot handle poison" in letter.error
        assert stack.consumer.outcomes_of(poison.id) == [Outcome.RETRY] * 3 + [Outcome.DEAD]
        assert poison.id not in await stack.effect_counts()

        broken = False
        await stack.transport.redeliver(stack.consumer.name, Envelope.from_json(letter.envelope))

        async def replayed() -> bool:
            return (await stack.effect_counts())[poison.id] == 1

        await eventually(replayed, what="the replayed event")
        await asyncio.sleep(0.3)
        assert await stack.effect_counts() == Counter({env.id: 1 for env in [poison, *good]})
        assert len(await stack.dead_letters()) == 1
        assert await queue_state(stack.url, stack.runner.parking_queue_name) == (0, 0)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'svc.db'}"


async def test_event_nobody_consumes_is_confirmed_but_redelivery_needs_a_queue(
    rabbitmq_url: str, data_dir: Path
) -> None:
    async with running_stack(rabbitmq_url, sqlite_url(data_dir)) as stack:
        [env] = await stack.emit(1)
        nobody_listens = env.model_copy(update={"type": "nobody.listens", "id": "x-" + env.id})
        # Pub/sub: an event type without subscribers is dropped by the exchange, and must not
        # hold up the outbox behind it.
        await stack.transport.publish([nobody_listens])
        # A redelivery names one consumer's queue: a missing queue is an error, never a drop.
        with pytest.raises(PublishFailedError):
            await stack.transport.redeliver("no-such-consumer", env)


async def test_stopped_runner_leaves_events_queued_for_the_next_run(
    rabbitmq_url: str, data_dir: Path
) -> None:
    async with running_stack(rabbitmq_url, sqlite_url(data_dir)) as stack:
        stack.stop.set()
        await asyncio.wait_for(stack.tasks[0], timeout=10)
        assert await queue_state(stack.url, stack.runner.queue_name) == (0, 0)
        sent = await stack.emit(5)
        await stack.relay.run_once()

        async def queued() -> bool:
            return await queue_state(stack.url, stack.runner.queue_name) == (5, 0)

        await eventually(queued, what="5 events waiting in the queue")
        assert await stack.effect_counts() == Counter()

        again = asyncio.Event()
        task = asyncio.create_task(stack.runner.run(again))

        async def applied() -> bool:
            return len(await stack.effect_counts()) == 5

        await eventually(applied, what="the queued events")
        again.set()
        await asyncio.wait_for(task, timeout=10)
        assert await stack.effect_counts() == Counter({env.id: 1 for env in sent})


async def test_undecodable_message_is_parked(rabbitmq_url: str, data_dir: Path) -> None:
    async with running_stack(rabbitmq_url, sqlite_url(data_dir)) as stack:
        connection = await aio_pika.connect(stack.url)
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(b"{not json", message_id="garbage"),
            routing_key=stack.runner.queue_name,
        )
        await connection.close()
        [env] = await stack.emit(1)
        await stack.relay.run_once()

        async def parked() -> bool:
            return await queue_state(stack.url, stack.runner.parking_queue_name) == (1, 0)

        await eventually(parked, what="the garbage message in the parking queue")

        async def applied() -> bool:
            return (await stack.effect_counts())[env.id] == 1

        await eventually(applied, what="the event behind the garbage")


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@pytest.mark.disruptive
@pytest.mark.timeout(180)
async def test_broker_restart_mid_stream_loses_nothing_and_duplicates_nothing(
    rabbitmq_url: str, database_url: str
) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("restarting the broker needs rabbitmqctl on this machine")
    total, before, batch = 1000, 800, 10
    async with running_stack(rabbitmq_url, database_url, relay_task=True) as stack:

        async def applied_count() -> int:
            return sum((await stack.effect_counts()).values())

        async def restart_broker() -> None:
            while await applied_count() < 150:
                await asyncio.sleep(0.02)
            print(f"stopping broker: emitted={len(sent)} applied={await applied_count()}")
            try:
                await asyncio.to_thread(rabbitmqctl, "stop_app")
                await asyncio.sleep(1.0)  # the relay and runner keep trying meanwhile
            finally:
                # Whatever happened, leave the broker running for the other tests.
                await asyncio.to_thread(rabbitmqctl, "start_app")
                await asyncio.to_thread(rabbitmqctl, "await_startup")
            print(f"broker back: emitted={len(sent)} applied={await applied_count()}")

        restart = asyncio.create_task(restart_broker())
        sent: list[Envelope] = []
        for start in range(0, before, batch):
            sent += await stack.emit(batch, start=start)
            await asyncio.sleep(0.02)
        await asyncio.wait_for(restart, timeout=90)
        # Events sent only after the restart prove the consumer resumed on the new connection.
        for start in range(before, total, batch):
            sent += await stack.emit(batch, start=start)

        async def all_applied() -> bool:
            return await applied_count() >= total

        await eventually(all_applied, timeout=60, what=f"{total} effects after the restart")
        await asyncio.sleep(1.0)  # let stray redeliveries arrive: they must be duplicates
        counts = await stack.effect_counts()
        assert len(sent) == total
        assert set(counts) == {env.id for env in sent}
        assert [eid for eid, n in counts.items() if n != 1] == []
        assert await stack.inbox_size() == total
        assert await stack.dead_letters() == []
        assert all(not task.done() for task in stack.tasks), "relay or runner died"
        state = await queue_state(stack.url, stack.runner.queue_name)
        assert state is not None
        assert state[1] == 1  # re-registered consumer after the reconnect
        assert await queue_state(stack.url, stack.runner.parking_queue_name) == (0, 0)
        duplicates = sum(1 for _, o in stack.consumer.outcomes if o is Outcome.DUPLICATE)
        print(f"deliveries={len(stack.consumer.outcomes)} duplicates={duplicates}")
