"""Fires each job's ticks on exactly one replica, runs queued runs, and records every run.

How one tick fires once: the schedule's next tick is a row in `job_state` shared by every
replica. A replica that finds it due inserts the run row `(job, tick)`, which a unique
constraint lets only one replica do, and moves `job_state` to the following tick in the same
transaction. The losers' inserts conflict and do nothing.

How a crash cannot block: a running run carries a lease that its runner renews every third of
the lease. A run whose lease lapsed (its process died) is marked failed by whichever scheduler
looks next, and ticks are claimed independently of earlier runs. A tick that finds a live run
of the same job is recorded as `skipped` rather than run twice at once.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

import structlog

from mercato.integration.domain import error_text
from mercato.integration.jobs import Job, Progress, RunContext
from mercato.integration.store import JobRuns, RunRecord
from mercato.platform import metrics
from mercato.platform.aio import wait_any
from mercato.platform.clock import utcnow
from mercato.platform.http import UpstreamError
from mercato.platform.ids import new_id_str
from mercato.platform.token_manager import TokenError
from mercato.platform.uow import UnitOfWorkFactory

log = structlog.get_logger("mercato.integration.scheduler")

# Failures of the outside world: worth a warning with the reason, not a traceback.
_EXPECTED = (UpstreamError, TokenError)


class Scheduler:
    """The job loop of one process (one per replica)."""

    def __init__(
        self,
        jobs: Mapping[str, Job],
        uow: UnitOfWorkFactory,
        *,
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
        owner: str | None = None,
    ) -> None:
        self.jobs = dict(jobs)
        self._uow = uow
        self.lease = timedelta(seconds=lease_seconds)
        self.poll = poll_seconds
        self._clock = clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.started_at: datetime | None = None
        self.running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        # When each job is next due as last read; another replica can only move it later, so
        # the database is not asked again before then (keeps an idle pass read-only).
        self._due: dict[str, datetime] = {}
        self._next_reap: datetime | None = None

    def wake(self) -> None:
        """Look for work now (a run was just queued)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until `stop` is set (a platform background task)."""
        self.started_at = self._clock()
        log.info("scheduler started", owner=self.owner, jobs=sorted(self.jobs))
        try:
            while not stop.is_set():
                try:
                    delay = await self.tick()
                except Exception as exc:  # the database blinked: try again shortly
                    log.warning("scheduler pass failed", error=error_text(exc))
                    delay = self.poll
                self._wake.clear()
                await wait_any(stop, self._wake, timeout=delay)
        finally:
            await self.shutdown()

    async def tick(self) -> float:
        """One pass: reap crashed runs, fire due ticks, take queued runs; answers the seconds
        until something is due (at most the poll interval)."""
        if self.started_at is None:
            self.started_at = self._clock()
        now = self._clock()
        if self._next_reap is None or now >= self._next_reap:
            async with self._uow() as uow:
                reaped = await JobRuns(uow.connection).reap(now)
            if reaped:
                log.warning("runs abandoned by a crashed runner marked failed", runs=reaped)
            self._next_reap = now + self.lease / 6
        wait = self.poll
        for job in self.jobs.values():
            refresh = getattr(job, "refresh", None)
            if refresh is not None:
                await refresh()
            if job.disabled_reason() is not None:
                self._due.pop(job.spec.name, None)
                continue
            due = self._due.get(job.spec.name)
            if due is not None and now < due:
                wait = min(wait, (due - now).total_seconds())
                continue
            wait = min(wait, await self._fire_if_due(job, now))
        await self._take_queued(now)
        return max(0.01, wait)

    async def _fire_if_due(self, job: Job, now: datetime) -> float:
        spec = job.spec
        assert self.started_at is not None
        first = spec.schedule.first_tick(now, spec.initial_delay)
        not_before = self.started_at + timedelta(seconds=spec.initial_delay)
        run_id = new_id_str()
        async with self._uow() as uow:
            runs = JobRuns(uow.connection)
            tick = await runs.next_run_at(spec.name, first)
            due = max(tick, not_before)
            if now < due:
                self._due[spec.name] = due
                return (due - now).total_seconds()
            following = spec.schedule.next_after(tick, now)
            busy = await runs.live_run(spec.name, now)
            row = {
                "id": run_id,
                "trigger": "schedule",
                "status": "skipped" if busy else "running",
                "requested_at": now,
                "started_at": now,
                "owner": self.owner,
                "lease_until": None if busy else now + self.lease,
                "finished_at": now if busy else None,
                "error": "previous run still running" if busy else None,
            }
            claimed = await runs.claim_tick(spec.name, tick, row)
            if claimed:
                await runs.advance(spec.name, tick, following)
        self._due.pop(spec.name, None)
        if not claimed:
            return 0.0  # another replica took it; read the new state at once
        if busy:
            log.info("tick skipped: previous run still running", job=spec.name)
        else:
            self._launch(run_id, job)
        return max(0.0, (following - now).total_seconds())

    async def _take_queued(self, now: datetime) -> None:
        async with self._uow() as uow:
            waiting = await JobRuns(uow.connection).queued()
        for run_id, name in waiting:
            job = self.jobs.get(name)
            if job is None or run_id in self.running:
                continue
            async with self._uow() as uow:
                taken = await JobRuns(uow.connection).start_queued(
                    run_id, self.owner, now, now + self.lease
                )
            if taken:
                self._launch(run_id, job)

    def _launch(self, run_id: str, job: Job) -> None:
        task = asyncio.create_task(self.execute(run_id, job), name=f"job:{job.spec.name}")
        self.running[run_id] = task
        task.add_done_callback(lambda _: self.running.pop(run_id, None))

    async def run_now(
        self, name: str, *, trigger: str = "cli", progress: Progress | None = None
    ) -> RunRecord:
        """Record and run one run of `name` here and now (`mercato jobs run`)."""
        job = self.jobs[name]
        now = self._clock()
        async with self._uow() as uow:
            run_id = await JobRuns(uow.connection).add(
                name,
                trigger=trigger,
                status="running",
                requested_at=now,
                started_at=now,
                owner=self.owner,
                lease_until=now + self.lease,
            )
        await self.execute(run_id, job, progress)
        async with self._uow() as uow:
            record = await JobRuns(uow.connection).get(run_id)
        assert record is not None
        return record

    async def execute(self, run_id: str, job: Job, progress: Progress | None = None) -> None:
        """Run one claimed run, heart-beating its lease, and record how it ended."""
        name = job.spec.name
        ctx = RunContext(run_id, now=self._clock)
        if progress is not None:
            ctx.progress = progress
        beat = asyncio.create_task(self._heartbeat(run_id))
        log.info("job run started", job=name, run_id=run_id)
        started, status = time.monotonic(), "failed"
        try:
            outcome = await job.run(ctx)
        except asyncio.CancelledError:
            await self._finish(run_id, "failed", error="interrupted: the process stopped")
            raise
        except Exception as exc:
            text = error_text(exc)
            extra = {} if isinstance(exc, _EXPECTED) else {"exc_info": exc}
            log.warning("job run failed", job=name, run_id=run_id, error=text, **extra)
            await self._finish(run_id, "failed", error=text)
        else:
            log.info("job run succeeded", job=name, run_id=run_id, **outcome.counts)
            status = "succeeded"
            await self._finish(
                run_id,
                "succeeded",
                counts=outcome.counts,
                output=outcome.output,
                error=outcome.error,
            )
        finally:
            beat.cancel()
            metrics.job_run(name, status, time.monotonic() - started)

    async def _finish(
        self,
        run_id: str,
        status: str,
        *,
        counts: dict[str, int] | None = None,
        output: str | None = None,
        error: str | None = None,
    ) -> None:
        async with self._uow() as uow:
            await JobRuns(uow.connection).finish(
                run_id, status=status, now=self._clock(), counts=counts, output=output, error=error
            )

    async def _heartbeat(self, run_id: str) -> None:
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._uow() as uow:
                    kept = await JobRuns(uow.connection).heartbeat(
                        run_id, self.owner, self._clock() + self.lease
                    )
            except Exception as exc:
                log.warning("run heartbeat failed", run_id=run_id, error=error_text(exc))
                continue
            if not kept:
                log.warning("run lease lost (marked abandoned elsewhere)", run_id=run_id)
                return

    async def shutdown(self, grace: float = 5.0) -> None:
        """Let running runs finish for `grace` seconds, then interrupt them (recorded)."""
        tasks = list(self.running.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
