"""The job scheduler over a real database (SQLite and PostgreSQL): one firing per tick across
replicas, crashed runs marked failed without blocking the next tick, queued runs taken once."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mercato.integration.domain import JobSpec, RunOutcome, parse_schedule
from mercato.integration.jobs import Job, RunContext
from mercato.integration.module import MIGRATIONS
from mercato.integration.scheduler import Scheduler
from mercato.integration.service import IntegrationService
from mercato.integration.store import JobRuns, RunRecord
from mercato.platform.db import Database
from mercato.platform.errors import Conflict, NotFound
from mercato.platform.migrations import upgrade
from mercato.platform.token_manager import TokenManager
from mercato.platform.uow import UnitOfWork

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A wall clock that moves only when told."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class CountingJob(Job):
    """Records each run; fails when told to."""

    def __init__(self, name: str, schedule: str = "60s", delay: float = 0.0) -> None:
        self.spec = JobSpec(name, "test job", parse_schedule(schedule), delay)
        self.runs: list[str] = []
        self.fail_next = 0
        self.disabled: str | None = None

    def disabled_reason(self) -> str | None:
        return self.disabled

    async def run(self, ctx: RunContext) -> RunOutcome:
        self.runs.append(ctx.run_id)
        await asyncio.sleep(0)
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("upstream said no")
        return RunOutcome(counts={"n": len(self.runs)}, output="ok")


@pytest.fixture
async def databases(database_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """Two handles on one database, as two replicas would have."""
    first, second = Database("integration", database_url), Database("integration", database_url)
    await upgrade(first, [MIGRATIONS])
    yield first, second
    await first.dispose()
    await second.dispose()


def scheduler(database: Database, jobs: list[Job], clock: Clock, owner: str) -> Scheduler:
    return Scheduler(
        {j.spec.name: j for j in jobs},
        lambda: UnitOfWork(database, "integration"),
        lease_seconds=60,
        clock=clock,
        owner=owner,
    )


async def settle(*schedulers: Scheduler) -> None:
    for s in schedulers:
        if s.running:
            await asyncio.gather(*list(s.running.values()))


async def all_runs(database: Database, job: str) -> list[RunRecord]:
    async with UnitOfWork(database, "integration") as uow:
        runs, _ = await JobRuns(uow.connection).page(job, 0, 500)
    return runs


async def test_two_replicas_fire_each_tick_exactly_once(
    databases: tuple[Database, Database],
) -> None:
    clock = Clock()
    job_a, job_b = CountingJob("sync"), CountingJob("sync")
    a = scheduler(databases[0], [job_a], clock, "replica-a")
    b = scheduler(databases[1], [job_b], clock, "replica-b")
    rng = random.Random(5)
    for _ in range(25):
        await asyncio.gather(a.tick(), b.tick())
        await settle(a, b)
        # Mostly on time, sometimes late (missed ticks coalesce), sometimes between ticks.
        clock.advance(rng.choice([60, 60, 60, 30, 150]))
    runs = await all_runs(databases[0], "sync")
    ticks = [r.tick for r in runs]
    assert len(ticks) == len(set(ticks)) > 10
    assert len(job_a.runs) + len(job_b.runs) == len(runs)
    assert {r.status for r in runs} == {"succeeded"}
    # Both replicas did some of the work: nothing pins ticks to one of them.
    print(f"\nticks run by replica a: {len(job_a.runs)}, by b: {len(job_b.runs)}")


async def test_a_failing_run_is_recorded_and_the_next_tick_runs(
    databases: tuple[Database, Database],
) -> None:
    clock = Clock()
    job = CountingJob("flaky")
    job.fail_next = 1
    s = scheduler(databases[0], [job], clock, "replica-a")
    await s.tick()
    await settle(s)
    clock.advance(60)
    await s.tick()
    await settle(s)
    newest, oldest = await all_runs(databases[0], "flaky")
    assert oldest.status == "failed"
    assert oldest.error == "RuntimeError: upstream said no"
    assert oldest.finished_at is not None
    assert newest.status == "succeeded" and newest.output == "ok"


async def test_a_crashed_runner_is_reaped_and_does_not_block_later_ticks(
    databases: tuple[Database, Database],
) -> None:
    clock = Clock()
    job = CountingJob("export", delay=0)
    survivor = scheduler(databases[1], [job], clock, "replica-b")
    # What a process killed mid-run leaves behind: its claimed tick, running, with a lease.
    async with UnitOfWork(databases[0], "integration") as uow:
        runs = JobRuns(uow.connection)
        tick = await runs.next_run_at("export", T0)
        await runs.claim_tick(
            "export",
            tick,
            {
                "id": "00000000-0000-7000-8000-00000000dead",
                "trigger": "schedule",
                "status": "running",
                "requested_at": T0,
                "started_at": T0,
                "owner": "replica-a (killed)",
                "lease_until": T0 + timedelta(seconds=90),
            },
        )
        await runs.advance("export", tick, T0 + timedelta(seconds=60))
    clock.advance(60)  # the next tick, while the dead run's lease still holds: skipped
    await survivor.tick()
    clock.advance(61)  # lease lapsed: reaped; the due tick runs normally
    await survivor.tick()
    await settle(survivor)
    runs_now = await all_runs(databases[0], "export")
    by_status = Counter(r.status for r in runs_now)
    assert by_status == {"failed": 1, "skipped": 1, "succeeded": 1}
    dead = next(r for r in runs_now if r.status == "failed")
    assert dead.error.startswith("abandoned")
    assert len(job.runs) == 1


async def test_a_queued_run_is_taken_by_exactly_one_replica(
    databases: tuple[Database, Database],
) -> None:
    clock = Clock()
    job_a, job_b = CountingJob("export", delay=3600), CountingJob("export", delay=3600)
    a = scheduler(databases[0], [job_a], clock, "replica-a")
    b = scheduler(databases[1], [job_b], clock, "replica-b")
    service = IntegrationService(
        uow=lambda: UnitOfWork(databases[0], "integration"),
        jobs={"export": job_a},
        export_dir=Path("/nonexistent"),
        token_managers=_no_managers,
        wake_scheduler=a.wake,
        clock=clock,
    )
    run_ids = [await service.request_run("export") for _ in range(3)]
    await asyncio.gather(a.tick(), b.tick())
    await settle(a, b)
    assert sorted(job_a.runs + job_b.runs) == sorted(run_ids)
    runs, total = await service.runs("export", 0, 10)
    assert total == 3 and {r.status for r in runs} == {"succeeded"}
    assert {r.trigger for r in runs} == {"manual"}
    with pytest.raises(NotFound):
        await service.request_run("nope")
    job_a.disabled = "nothing configured"
    with pytest.raises(Conflict):
        await service.request_run("export")
    views = await service.list_jobs()
    assert views[0].enabled is False and views[0].disabled_reason == "nothing configured"


async def test_a_disabled_job_never_fires(databases: tuple[Database, Database]) -> None:
    clock = Clock()
    job = CountingJob("off")
    job.disabled = "no upstream"
    s = scheduler(databases[0], [job], clock, "a")
    for _ in range(3):
        await s.tick()
        clock.advance(120)
    assert job.runs == [] and await all_runs(databases[0], "off") == []


async def _no_managers() -> list[TokenManager]:
    return []
