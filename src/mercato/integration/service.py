"""Use cases of the integration service, over a unit of work; dependencies come in as parameters.

The HTTP router and the CLI both call these; neither touches tables or upstreams directly.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mercato.integration.jobs import Job
from mercato.integration.store import (
    ExportFile,
    ExportFiles,
    JobRuns,
    RunRecord,
    external_orders_page,
)
from mercato.platform.clock import utcnow
from mercato.platform.errors import Conflict, NotFound
from mercato.platform.token_manager import TokenManager, TokenStatus
from mercato.platform.uow import UnitOfWorkFactory

# Export names as the job writes them: no separators, no dot-files, nothing but a CSV.
_EXPORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,126}\.csv$")


@dataclass(frozen=True)
class JobView:
    """A job as an operator sees it."""

    name: str
    description: str
    schedule: str
    initial_delay_seconds: float
    enabled: bool
    disabled_reason: str | None
    next_run_at: datetime | None
    last_run: RunRecord | None


class IntegrationService:
    """Jobs, runs, exports, imported orders and tokens."""

    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        jobs: Mapping[str, Job],
        export_dir: Path,
        token_managers: Callable[[], Awaitable[list[TokenManager]]],
        wake_scheduler: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._uow = uow
        self.jobs = dict(jobs)
        self.export_dir = export_dir
        self._token_managers = token_managers
        self._wake = wake_scheduler
        self._clock = clock

    def _job(self, name: str) -> Job:
        job = self.jobs.get(name)
        if job is None:
            raise NotFound(f"no job named {name!r}; jobs: {', '.join(sorted(self.jobs))}")
        return job

    async def list_jobs(self) -> list[JobView]:
        """Every job with its schedule, state, last run and next run."""
        views = []
        for job in self.jobs.values():
            # Before the transaction: refreshing may read the database itself.
            refresh = getattr(job, "refresh", None)
            if refresh is not None:
                await refresh()
        async with self._uow() as uow:
            runs = JobRuns(uow.connection)
            state = await runs.schedule_state()
            for job in self.jobs.values():
                reason = job.disabled_reason()
                spec = job.spec
                views.append(
                    JobView(
                        name=spec.name,
                        description=spec.description,
                        schedule=spec.schedule.describe(),
                        initial_delay_seconds=spec.initial_delay,
                        enabled=reason is None,
                        disabled_reason=reason,
                        next_run_at=state.get(spec.name) if reason is None else None,
                        last_run=await runs.last(spec.name),
                    )
                )
        return views

    async def disabled_reason(self, name: str) -> str | None:
        """Why job `name` cannot run now, or None."""
        job = self._job(name)
        refresh = getattr(job, "refresh", None)
        if refresh is not None:
            await refresh()
        return job.disabled_reason()

    async def request_run(self, name: str) -> str:
        """Queue a run of `name` now; a scheduler picks it up. Answers the run id."""
        reason = await self.disabled_reason(name)
        if reason is not None:
            raise Conflict(f"job {name} is disabled: {reason}")
        async with self._uow() as uow:
            run_id = await JobRuns(uow.connection).add(
                name, trigger="manual", status="queued", requested_at=self._clock()
            )
        self._wake()
        return run_id

    async def runs(self, name: str, skip: int, limit: int) -> tuple[list[RunRecord], int]:
        """The run history of `name`, newest first."""
        self._job(name)
        async with self._uow() as uow:
            return await JobRuns(uow.connection).page(name, skip, limit)

    async def exports(self, skip: int, limit: int) -> tuple[list[ExportFile], int]:
        """Export files the job wrote and rotation kept, newest first."""
        async with self._uow() as uow:
            return await ExportFiles(uow.connection).page(skip, limit)

    async def export_path(self, file_name: str) -> Path:
        """The path of an export file the job wrote; NotFound for anything else.

        Three locks against path traversal: the name's shape, its record in the database, and
        the resolved path's parent being the export directory itself.
        """
        if not _EXPORT_NAME.match(file_name):
            raise NotFound(f"no export named {file_name!r}")
        async with self._uow() as uow:
            record = await ExportFiles(uow.connection).get(file_name)
        directory = self.export_dir.resolve()
        path = (directory / file_name).resolve()
        if record is None or path.parent != directory or not path.is_file():
            raise NotFound(f"no export named {file_name!r}")
        return path

    async def external_orders(
        self, skip: int, limit: int, source: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Imported external orders."""
        async with self._uow() as uow:
            return await external_orders_page(uow.connection, skip, limit, source)

    async def token_status(self) -> dict[str, TokenStatus]:
        """Each upstream's token state, never the token."""
        return {m.name: await m.status() for m in await self._token_managers()}

    async def forget_tokens(self, upstream: str | None = None) -> list[str]:
        """Drop cached tokens (of one upstream, or all); the next call fetches."""
        managers = await self._token_managers()
        chosen = [m for m in managers if upstream is None or m.name == upstream]
        if upstream is not None and not chosen:
            names = ", ".join(m.name for m in managers) or "none configured"
            raise NotFound(f"no upstream named {upstream!r}; upstreams: {names}")
        for manager in chosen:
            await manager.invalidate()
        return [m.name for m in chosen]
