"""The Kafka transport against a real Kafka-protocol broker (Tansu): what travels on the wire,
parking, replay to an undeclared consumer, and a broker outage in the middle of 1,000 events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from mercato.platform.events import Envelope
from mercato.platform.events.admin import event_stats
from mercato.platform.events.kafka import KafkaTransport, PublishFailedError
from mercato.platform.events.kafka_wire import TYPE_HEADER, header
from mercato.platform.settings import Settings
from tests.backbone import Harness
from tests.harness import stack
from tests.kafka_broker import OutageProxy, start_tansu

pytestmark = pytest.mark.kafka


@pytest.fixture
async def harness(kafka_url: str, data_dir: Path) -> AsyncIterator[Harness]:
    h = Harness(
        f"sqlite+aiosqlite:///{data_dir / 'producer.db'}",
        f"sqlite+aiosqlite:///{data_dir / 'consumer.db'}",
        "kafka",
        kafka_url=kafka_url,
    )
    await h.setup()
    yield h
    await h.close()


def kafka_of(harness: Harness) -> KafkaTransport:
    assert isinstance(harness.transport, KafkaTransport)
    return harness.transport


async def read_topic(bootstrap: str, topic: str, count: int) -> list[Any]:
    """The first `count` records of a topic, read outside any group."""
    reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await reader.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(15):
            async for record in reader:
                records.append(record)
                if len(records) >= count:
                    break
    finally:
        await reader.stop()
    return records


async def test_events_travel_keyed_by_subject_with_their_type(harness: Harness) -> None:
    transport = kafka_of(harness)
    harness.start_consumer()
    harness.start_relay()
    sent = [await harness.emit("order-1", i) for i in range(3)]
    assert await harness.wait_effects(3) == {env.id: 1 for env in sent}
    records = await read_topic(transport.bootstrap_servers, transport.names.stream, 3)
    # One subject, one partition: the aggregate's events stay in order.
    assert {r.partition for r in records} == {records[0].partition}
    assert [Envelope.from_json(r.value).id for r in records] == [e.id for e in sent]
    assert all(r.key == b"order-1" for r in records)
    assert header(records[0].headers, TYPE_HEADER) == "thing.happened"


async def test_undecodable_record_is_parked_and_does_not_block(harness: Harness) -> None:
    transport = kafka_of(harness)
    harness.start_consumer()
    harness.start_relay()
    producer = AIOKafkaProducer(bootstrap_servers=transport.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(transport.names.stream, b"{not json", key=b"x")
    finally:
        await producer.stop()
    env = await harness.emit("after-garbage", 1)
    assert await harness.wait_effects(1) == {env.id: 1}
    parked = await read_topic(
        transport.bootstrap_servers, transport.names.dead_topic("consumer"), 1
    )
    assert parked[0].value == b"{not json"


async def test_replay_to_an_undeclared_consumer_is_an_error(harness: Harness) -> None:
    env = await harness.emit("a", 1)
    with pytest.raises(PublishFailedError):
        await harness.transport.redeliver("no-such-consumer", env)


@pytest.mark.timeout(240)
async def test_broker_outage_mid_stream_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, data_dir: Path
) -> None:
    # Tansu's memory storage forgets everything when its process stops, so a restart of ours
    # would lose what a real (durable) broker keeps. What the clients see of a restart (every
    # connection cut, none accepted for a while, then the same log again) is made by a proxy in
    # front of our own Tansu, which keeps running.
    proxy = OutageProxy()
    port = await proxy.listen()
    broker = start_tansu(tmp_path / "tansu", advertised_port=port)
    proxy.target_port = broker.port
    tag = uuid.uuid4().hex[:6]
    h = Harness(
        f"sqlite+aiosqlite:///{data_dir / 'producer.db'}",
        f"sqlite+aiosqlite:///{data_dir / 'consumer.db'}",
        "kafka",
        kafka_url=broker.url,
    )
    total, before, batch = 1000, 800, 10
    try:
        await h.setup()
        h.start_consumer()
        h.start_relay()

        async def applied() -> int:
            return sum((await h.effect_counts()).values())

        async def cut() -> None:
            while await applied() < 150:
                await asyncio.sleep(0.02)
            print(f"cutting the broker off ({tag}): applied={await applied()}")
            await proxy.outage(4.0)  # longer than the group session (3 s): a rejoin
            print(f"broker back: applied={await applied()} cut={proxy.cut} refused={proxy.refused}")

        outage = asyncio.create_task(cut())
        sent: list[Envelope] = []
        for start in range(0, before, batch):
            sent += await h.emit_many(batch, batch, start=start)
            await asyncio.sleep(0.02)
        await asyncio.wait_for(outage, timeout=120)
        # Relay and consumer were connected, and knocked on the closed door meanwhile.
        assert proxy.cut > 0 and proxy.refused > 0, (proxy.cut, proxy.refused)
        # Events sent only after the outage prove relay and consumer resumed.
        sent += await h.emit_many(total - before, batch, start=before)
        counts = await h.wait_effects(total, timeout=120)
        assert len(sent) == total
        assert set(counts) == {env.id for env in sent}
        assert [eid for eid, n in counts.items() if n != 1] == []
        stats = await event_stats(h.consumer_db)
        assert (stats.inbox_size, stats.dead_letters) == (total, 0)
        assert (await event_stats(h.producer)).outbox_backlog == 0
        assert all(not task.done() for task in h.tasks), "relay or consumer died"
    finally:
        await h.close()
        await proxy.close()
        broker.stop()


async def test_readiness_follows_the_broker(tmp_path: Path) -> None:
    broker = start_tansu(tmp_path / "tansu")
    transport = KafkaTransport(broker.url, topic="ready.events", prefix="ready")
    try:
        assert not await transport.is_ready()  # not started
        await transport.start()
        assert await transport.is_ready()
        broker.stop()
        assert not await transport.is_ready()
    finally:
        await transport.close()
        broker.stop()


async def test_ready_endpoint_of_a_platform_on_kafka(kafka_backend: Settings) -> None:
    async with stack(kafka_backend, ["catalog"]) as s:
        answer = await s.client.get("/ready")
        assert answer.status_code == 200, answer.text
        assert "broker" in answer.text
