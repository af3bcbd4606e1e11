"""What a job is to the scheduler: a spec, whether it can run, and one run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from mercato.integration.domain import JobSpec, RunOutcome
from mercato.platform.clock import utcnow

Progress = Callable[[int, int | None], None]
"""Called with (done, total or None) as a run advances (drives the CLI's progress bar)."""


def _no_progress(done: int, total: int | None) -> None:
    return None


@dataclass
class RunContext:
    """What a job run is handed: its id, a clock and where to report progress."""

    run_id: str
    now: Callable[[], datetime] = utcnow
    progress: Progress = field(default=_no_progress)


class Job:
    """A schedulable job: its spec, whether it can run, and the run itself."""

    spec: JobSpec

    def disabled_reason(self) -> str | None:
        """Why the job cannot run (nothing configured), or None."""
        return None

    async def run(self, ctx: RunContext) -> RunOutcome:
        """Do the work once; raising marks the run failed."""
        raise NotImplementedError
