"""The backbone's guarantees on SQLite and PostgreSQL, over in-process, RabbitMQ and Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mercato.platform.events.admin import event_stats, list_dead_letters, replay_dead_letter
from mercato.platform.events.relay import OutboxRelay
from mercato.platform.events.tables import outbox
from mercato.platform.uow import UnitOfWork
from tests.backbone import Harness, ThingHappened


@pytest.fixture(params=["inprocess", "rabbitmq", "kafka"])
def transport_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def harness(
    request: pytest.FixtureRequest, transport_kind: str, database_url: str, data_dir: Path
) -> AsyncIterator[Harness]:
    rabbitmq_url = request.getfixturevalue("rabbitmq_url") if transport_kind == "rabbitmq" else None
    kafka_url = request.getfixturevalue("kafka_url") if transport_kind == "kafka" else None
    if database_url.startswith("sqlite"):
        producer_url = f"sqlite+aiosqlite:///{data_dir / 'producer.db'}"
        consumer_url = f"sqlite+aiosqlite:///{data_dir / 'consumer.db'}"
    else:
        producer_url = consumer_url = database_url  # one database, a schema per service
    h = Harness(
        producer_url, consumer_url, transport_kind, rabbitmq_url=rabbitmq_url, kafka_url=kafka_url
    )
    await h.setup()
    yield h
    await h.close()


async def test_committed_event_is_applied_once(harness: Harness) -> None:
    harness.start_consumer()
    harness.start_relay()
    env = await harness.emit("a", 1)
    counts = await harness.wait_effects(1)
    assert counts == {env.id: 1}


async def test_crash_between_commit_and_publish_loses_nothing(harness: Harness) -> None:
    # The "process" commits and dies before its relay runs: the event waits in the outbox.
    env = await harness.emit("a", 1)
    stats = await event_stats(harness.producer)
    assert stats.outbox_backlog == 1
    # A new process starts: a fresh relay on the same database sends it.
    harness.start_consumer()
    await OutboxRelay(harness.producer, harness.transport).run_once()
    assert await harness.wait_effects(1) == {env.id: 1}
    assert (await event_stats(harness.producer)).outbox_backlog == 0


async def test_crash_after_publish_before_mark_sent_applies_once(harness: Harness) -> None:
    class DiesAfterPublish:
        """Publishes for real, then the process 'dies' before the outbox row is marked sent."""

        def __init__(self, inner: object) -> None:
            self.inner = inner

        async def publish(self, envelopes: list[object]) -> None:
            await self.inner.publish(envelopes)  # type: ignore[attr-defined]
            raise SystemError("killed after publish")

    harness.start_consumer()
    env = await harness.emit("a", 1)
    with pytest.raises(SystemError):
        await OutboxRelay(harness.producer, DiesAfterPublish(harness.transport)).run_once()  # type: ignore[arg-type]
    assert (await event_stats(harness.producer)).outbox_backlog == 1
    await OutboxRelay(harness.producer, harness.transport).run_once()  # sends it again
    assert await harness.wait_effects(1) == {env.id: 1}


async def test_duplicate_delivery_has_no_second_effect(harness: Harness) -> None:
    harness.start_consumer()
    env = await harness.emit("a", 1)
    async with harness.producer.read() as conn:
        raw = (await conn.execute(select(outbox.c.envelope))).scalar_one()
    from mercato.platform.events import Envelope

    envelope = Envelope.from_json(raw)
    await harness.transport.publish([envelope])
    await harness.transport.publish([envelope])
    assert await harness.wait_effects(1) == {env.id: 1}


async def test_handler_failing_twice_then_succeeding_applies_once(harness: Harness) -> None:
    harness.failures["flaky"] = 2
    harness.start_consumer()
    harness.start_relay()
    env = await harness.emit("flaky", 1)
    assert await harness.wait_effects(1) == {env.id: 1}
    assert harness.attempts["flaky"] == 3


async def test_poison_event_dead_letters_without_blocking_and_replays(harness: Harness) -> None:
    harness.failures["poison"] = -1
    harness.start_consumer()
    harness.start_relay()
    poison = await harness.emit("poison", 0)
    behind = [await harness.emit(f"ok{i}", i) for i in range(5)]
    counts = await harness.wait_effects(5)
    assert counts == {env.id: 1 for env in behind}

    async def buried() -> bool:
        return (await list_dead_letters(harness.consumer_db, skip=0, limit=10)).total == 1

    await harness.wait_for(buried)
    page = await list_dead_letters(harness.consumer_db, skip=0, limit=10)
    letter = page.items[0]
    assert letter.event_id == poison.id
    assert letter.attempts == len(harness.retry_delays) + 1
    assert "told to fail" in letter.error
    assert (await event_stats(harness.consumer_db)).dead_letters == 1

    harness.failures["poison"] = 0  # the bug is fixed; replay
    await replay_dead_letter(harness.consumer_db, letter.id, harness.transport.redeliver)
    counts = await harness.wait_effects(6)
    assert counts[poison.id] == 1
    assert (await event_stats(harness.consumer_db)).dead_letters == 0


async def test_rollback_publishes_nothing(harness: Harness) -> None:
    harness.start_consumer()
    harness.start_relay()
    with pytest.raises(ValueError):
        async with UnitOfWork(harness.producer, "producer") as uow:
            await uow.emit(ThingHappened(n=1), subject="rolled-back")
            raise ValueError("change rejected")
    kept = await harness.emit("kept", 2)
    assert await harness.wait_effects(1) == {kept.id: 1}
    async with harness.producer.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(outbox))).scalar_one() == 1
