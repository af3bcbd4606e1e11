"""`mercato events dead-letters --replay` from a process of its own hands the event back to its
consumer through the configured transport: in-process into the consumer's durable queue table,
on Kafka into the consumer's replay topic."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import select

from mercato.platform.clock import utcnow
from mercato.platform.db import Database
from mercato.platform.events import Envelope
from mercato.platform.events.tables import dead_letters, incoming
from mercato.platform.migrations import upgrade
from tests.running import mercato


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
    return subprocess.run(
        mercato(*args),
        env={**clean, "MERCATO_LOG_LEVEL": "WARNING", "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def replay(letter_id: str, data_dir: Path, env: dict[str, str]) -> None:
    """Migrate, then replay one dead letter of wallet's with the CLI, as an operator would."""
    migrated = run_cli("migrate", "--data-dir", str(data_dir), env=env)
    assert migrated.returncode == 0, migrated.stderr
    args = ["--service", "wallet", "--replay", letter_id, "--data-dir", str(data_dir)]
    result = run_cli("events", "dead-letters", *args, env=env)
    assert result.returncode == 0, result.stderr
    assert f"replayed {letter_id}" in result.stdout


async def bury_one(data_dir: Path) -> tuple[str, Envelope]:
    """A dead letter of wallet's consumer in wallet's database (only the event tables)."""
    envelope = Envelope(
        type="user.created", source="accounts", subject="u-1", correlation_id="c-1", data={}
    )
    database = Database("wallet", f"sqlite+aiosqlite:///{data_dir / 'wallet.db'}")
    await upgrade(database, [])
    letter_id = str(uuid.uuid4())
    async with database.transaction() as conn:
        await conn.execute(
            dead_letters.insert().values(
                id=letter_id,
                consumer="wallet",
                event_id=envelope.id,
                event_type=envelope.type,
                envelope=envelope.to_json(),
                error="RuntimeError: boom",
                attempts=3,
                failed_at=utcnow(),
            )
        )
    await database.dispose()
    return letter_id, envelope


async def queued_for_wallet(data_dir: Path) -> list[str]:
    database = Database("wallet", f"sqlite+aiosqlite:///{data_dir / 'wallet.db'}")
    try:
        async with database.read() as conn:
            rows = await conn.execute(
                select(incoming.c.event_id).where(incoming.c.consumer == "wallet")
            )
            return list(rows.scalars())
    finally:
        await database.dispose()


def test_replay_in_process_queues_the_event_for_its_consumer(data_dir: Path) -> None:
    letter_id, envelope = asyncio.run(bury_one(data_dir))
    replay(letter_id, data_dir, env={})
    assert asyncio.run(queued_for_wallet(data_dir)) == [envelope.id]


@pytest.mark.kafka
def test_replay_on_kafka_reaches_the_consumers_replay_topic(data_dir: Path, kafka_url: str) -> None:
    letter_id, envelope = asyncio.run(bury_one(data_dir))
    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = {
        "MERCATO_BROKER_URL": kafka_url,
        "MERCATO_BROKER_TOPIC": f"{prefix}.events",
        "MERCATO_BROKER_QUEUE_PREFIX": prefix,
    }
    replay(letter_id, data_dir, env=env)

    async def replayed() -> list[Envelope]:
        bootstrap = kafka_url.removeprefix("kafka://").split("?")[0]
        reader = AIOKafkaConsumer(
            f"{prefix}.wallet.replay", bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        await reader.start()
        try:
            batches = await reader.getmany(timeout_ms=10_000)
            return [Envelope.from_json(r.value) for rs in batches.values() for r in rs]
        finally:
            await reader.stop()

    assert [e.id for e in asyncio.run(replayed())] == [envelope.id]
