"""Events per second through outbox -> transport -> inbox, next to baselines measured in the
same run (bare inserts, bare aio-pika, FastStream, a plain asyncpg + aio-pika outbox/inbox; see
`events_baselines.py`), every row on fresh state, and the p99 from an event's commit to its
effect's commit in-process.

Run with `make bench` (or `python bench/events.py [--events N]`). Prints figures and ratios; it
never fails on time. Needs PostgreSQL and RabbitMQ on localhost for the distributed rows (skipped
with a note when absent).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, event

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from events_baselines import bare_rabbit, faststream_rabbit, plain_outbox_inbox
from tests import services
from tests.backbone import Harness

from mercato.platform.db import AutoIncrementId, Database
from mercato.platform.events import Envelope
from mercato.platform.uow import UnitOfWork

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


def rate(count: int, seconds: float) -> str:
    """`count` over `seconds`, as events/s."""
    return f"{count / seconds:>9,.0f} events/s"


class Fresh:
    """Fresh state for every row: a new SQLite directory, PostgreSQL database and RabbitMQ
    vhost per call, all removed by `cleanup`. No row reuses what another one filled (the old
    PostgreSQL + RabbitMQ row ran on the database the row before it had filled, so its wait
    for effects was over at once and it timed only the emits)."""

    def __init__(self, have_pg: bool, have_rabbit: bool) -> None:
        self.have_pg = have_pg
        self.have_rabbit = have_rabbit
        self._dbs: list[str] = []
        self._vhosts: list[str] = []

    def sqlite(self, tag: str) -> str:
        """A new SQLite file."""
        return f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='mercato-bench-')}/{tag}.db"

    async def pg(self) -> str:
        """A new PostgreSQL database (SQLAlchemy asyncpg URL)."""
        name = f"mercato_bench_{uuid.uuid4().hex[:8]}"
        self._dbs.append(name)
        return await asyncio.to_thread(services.create_pg_database, name)

    def rabbit(self) -> str:
        """A new RabbitMQ vhost (AMQP URL)."""
        name = f"mercato-bench-{uuid.uuid4().hex[:8]}"
        self._vhosts.append(name)
        return services.create_vhost(name)

    async def cleanup(self) -> None:
        """Drop every database and vhost made here."""
        for name in self._dbs:
            await asyncio.to_thread(services.drop_pg_database, name)
        for name in self._vhosts:
            services.delete_vhost(name)


class NotingHarness(Harness):
    """The backbone harness, noting which events' effects the open transaction holds."""

    handled: list[int]

    async def handle(self, envelope: Envelope, uow: UnitOfWork) -> None:
        """The harness's effect, noted."""
        await super().handle(envelope, uow)
        self.handled.append(envelope.data["n"])


async def commit_to_applied(count: int, spacing: float) -> list[float]:
    """Milliseconds from each event's commit to the commit of its effect, SQLite in-process:
    one event per transaction, `spacing` seconds apart (a quiet system, not a flood)."""
    fresh = Fresh(False, False)
    harness = NotingHarness(fresh.sqlite("producer"), fresh.sqlite("consumer"), "inprocess")
    harness.handled = []
    committed: dict[int, float] = {}
    applied: dict[int, float] = {}

    def on_commit(_conn: object) -> None:
        now = time.perf_counter()
        for n in harness.handled:
            applied[n] = now
        harness.handled.clear()

    event.listen(harness.consumer_db.engine.sync_engine, "commit", on_commit)
    await harness.setup()
    harness.start_consumer()
    harness.start_relay()
    try:
        for n in range(count):
            await harness.emit(f"s{n}", n)
            committed[n] = time.perf_counter()
            await asyncio.sleep(spacing)
        await harness.wait_effects(count, timeout=120)
    finally:
        await harness.close()
    return [(applied[n] - committed[n]) * 1000 for n in range(count) if n in applied]


def percentile(samples: list[float], q: int) -> float:
    """The q-th percentile of `samples`."""
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--latency-events", type=int, default=300)
    args = parser.parse_args()
    count = args.events
    fresh = Fresh(
        services.port_open("127.0.0.1", 5432), services.port_open(services.RABBIT_HOST, 5672)
    )
    print(f"bench/events.py: {count} events, 100 per transaction, every row on fresh state")
    rows: list[tuple[str, float, list[tuple[str, float]]]] = []
    try:
        rows.append(
            (
                "SQLite + in-process",
                await through_backbone(
                    fresh.sqlite("producer"), fresh.sqlite("consumer"), "inprocess", count, None
                ),
                [("bare SQLite inserts", await bare_inserts(fresh.sqlite("bare"), count))],
            )
        )
        if fresh.have_pg:
            pg = await fresh.pg()
            rows.append(
                (
                    "PostgreSQL + in-process",
                    await through_backbone(pg, pg, "inprocess", count, None),
                    [("bare PostgreSQL inserts", await bare_inserts(await fresh.pg(), count))],
                )
            )
        if fresh.have_rabbit:
            rows.append(
                (
                    "SQLite + RabbitMQ",
                    await through_backbone(
                        fresh.sqlite("producer"),
                        fresh.sqlite("consumer"),
                        "rabbitmq",
                        count,
                        fresh.rabbit(),
                    ),
                    [("bare aio-pika publish+consume", await bare_rabbit(fresh.rabbit(), count))],
                )
            )
        if fresh.have_pg and fresh.have_rabbit:
            pg = await fresh.pg()
            mercato = await through_backbone(pg, pg, "rabbitmq", count, fresh.rabbit())
            plain_dsn = (await fresh.pg()).replace("postgresql+asyncpg", "postgresql")
            rows.append(
                (
                    "PostgreSQL + RabbitMQ",
                    mercato,
                    [
                        ("FastStream (RabbitMQ)", await faststream_rabbit(fresh.rabbit(), count)),
                        (
                            "asyncpg + aio-pika outbox/inbox",
                            await plain_outbox_inbox(plain_dsn, fresh.rabbit(), count),
                        ),
                        ("bare aio-pika publish+consume", await bare_rabbit(fresh.rabbit(), count)),
                    ],
                )
            )
        latencies = await commit_to_applied(args.latency_events, spacing=0.01)
    finally:
        await fresh.cleanup()
    print(f"{'path':<26}{'mercato':>18}   {'baseline':<34}{'baseline rate':>18}  mercato/baseline")
    for name, seconds, baselines in rows:
        for i, (base_name, base_seconds) in enumerate(baselines):
            shown = f"{name:<26}{rate(count, seconds):>18}" if i == 0 else " " * 44
            print(
                f"{shown}   {base_name:<34}{rate(count, base_seconds):>18}"
                f"  {base_seconds / seconds:5.2f}"
            )
    print(
        f"{'commit -> applied, SQLite':<26}{percentile(latencies, 99):>15.1f} ms   "
        f"p99 of {len(latencies)} events 10 ms apart (p50 {percentile(latencies, 50):.1f} ms); "
        "aim <= 20 ms"
    )
    print(
        "aims (issue 10): >= 5,000 events/s SQLite in-process; >= 2,000 events/s PostgreSQL + "
        "RabbitMQ, >= 1.5x FastStream and >= 0.8x the asyncpg + aio-pika outbox/inbox"
    )
    if not fresh.have_pg:
        print("note: PostgreSQL not reachable, its rows were skipped")
    if not fresh.have_rabbit:
        print("note: RabbitMQ not reachable, its rows were skipped")


if __name__ == "__main__":
    asyncio.run(main())
