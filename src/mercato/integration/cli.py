"""`mercato partner`, `mercato integration ...`, `mercato jobs ...` (added to mercato.cli)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mercato.integration.domain import EXPORT_PRODUCTS
from mercato.integration.module import MIGRATIONS
from mercato.integration.runtime import SERVICE, Integration
from mercato.integration.settings import IntegrationSettings
from mercato.platform.db import Database
from mercato.platform.logging import configure_logging
from mercato.platform.migrations import upgrade
from mercato.platform.settings import Settings, get_settings

integration_app = typer.Typer(help="Inspect the integration service.", no_args_is_help=True)
jobs_app = typer.Typer(help="List, run and inspect scheduled jobs.", no_args_is_help=True)
console = Console()
T = TypeVar("T")
DataDir = Annotated[Path | None, typer.Option(help="Where the SQLite files live.")]


def register(app: typer.Typer) -> None:
    """Add the integration commands to the `mercato` command."""
    app.add_typer(integration_app, name="integration")
    app.add_typer(jobs_app, name="jobs")
    app.command()(partner)


def partner(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    token_budget: Annotated[int, typer.Option(help="Tokens issued per rolling hour.")] = 5,
    token_lifetime: Annotated[int, typer.Option(help="Token lifetime in seconds.")] = 3600,
    products: Annotated[int, typer.Option(help="Products to generate.")] = 30,
    orders: Annotated[int, typer.Option(help="Orders to generate.")] = 20,
) -> None:
    """Run the partner sandbox: a fake external provider (client partner-client/partner-secret)."""
    from mercato.integration.partner import run_partner

    console.print(f"partner sandbox on http://{host}:{port} (token budget {token_budget}/h)")
    run_partner(
        host,
        port,
        token_budget=token_budget,
        token_lifetime=token_lifetime,
        products=products,
        orders=orders,
    )


def _settings(data_dir: Path | None) -> Settings:
    if data_dir is not None:
        os.environ["MERCATO_DATA_DIR"] = str(data_dir)
        get_settings.cache_clear()
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    return settings


@asynccontextmanager
async def _integration(settings: Settings) -> AsyncIterator[Integration]:
    """The integration service without HTTP, on the same database as the server's."""
    database = Database(SERVICE, settings.database_url_for(SERVICE))
    redis: Any = None
    if settings.redis_url:
        import redis.asyncio as aioredis

        redis = aioredis.from_url(settings.redis_url)
    runtime = Integration(
        settings=settings, integ=IntegrationSettings(), database=database, redis=redis
    )
    try:
        await upgrade(database, [MIGRATIONS])
        yield runtime
    finally:
        await runtime.stop()
        await database.dispose()
        if redis is not None:
            await redis.aclose()


def _run(settings: Settings, work: Callable[[Integration], Awaitable[T]]) -> T:
    async def main() -> T:
        async with _integration(settings) as runtime:
            return await work(runtime)

    return asyncio.run(main())


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


@integration_app.command("token-status")
def token_status(data_dir: DataDir = None) -> None:
    """Each upstream's token: cached or not, expiry, renewal, budget used (never the token)."""
    statuses = _run(_settings(data_dir), lambda rt: rt.service.token_status())
    table = Table("upstream", "token", "expires at", "renew at", "requests last hour", "error")
    for name, st in statuses.items():
        table.add_row(
            name,
            "cached" if st.has_token else "none",
            _when(st.expires_at),
            _when(st.renew_at),
            f"{st.requests_last_hour}/{st.budget_per_hour}",
            st.last_error or "",
        )
    if not statuses:
        console.print("no upstream with a token configured")
        return
    console.print(table)


@jobs_app.command("list")
def jobs_list(data_dir: DataDir = None) -> None:
    """Each job: schedule, enabled or why not, last run, next run."""
    views = _run(_settings(data_dir), lambda rt: rt.service.list_jobs())
    table = Table("job", "schedule", "state", "last run", "next run")
    for view in views:
        last = view.last_run
        table.add_row(
            view.name,
            view.schedule,
            "enabled" if view.enabled else f"disabled: {view.disabled_reason}",
            f"{last.status} {_when(last.requested_at)}" if last else "-",
            _when(view.next_run_at),
        )
    console.print(table)


@jobs_app.command("runs")
def jobs_runs(
    name: Annotated[str, typer.Argument(help="The job.")],
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    data_dir: DataDir = None,
) -> None:
    """A job's runs, newest first."""
    runs, total = _run(_settings(data_dir), lambda rt: _checked(rt, name).runs(name, 0, limit))
    table = Table("run", "trigger", "status", "started", "finished", "counts", "output / error")
    for run in runs:
        counts = " ".join(f"{k}={v}" for k, v in run.counts.items())
        table.add_row(
            run.id,
            run.trigger,
            run.status,
            _when(run.started_at),
            _when(run.finished_at),
            counts,
            run.error or run.output or "",
        )
    console.print(table)
    console.print(f"{len(runs)} of {total} runs")


def _checked(runtime: Integration, name: str) -> Any:
    if name not in runtime.jobs:
        raise typer.BadParameter(f"no job {name!r}; jobs: {', '.join(sorted(runtime.jobs))}")
    return runtime.service


@jobs_app.command("run")
def jobs_run(
    name: Annotated[str, typer.Argument(help="The job to run once, here and now.")],
    data_dir: DataDir = None,
) -> None:
    """Run a job once in this process (recorded like a scheduled run)."""
    settings = _settings(data_dir)

    async def work(runtime: Integration) -> Any:
        _checked(runtime, name)
        job = runtime.jobs[name]
        reason = await runtime.service.disabled_reason(name)
        if reason is not None:
            raise typer.BadParameter(f"job {name} is disabled: {reason}")
        if name != EXPORT_PRODUCTS or not console.is_terminal:
            return await runtime.scheduler.run_now(name)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(f"{job.spec.name}", total=None)

            def progress(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            return await runtime.scheduler.run_now(name, progress=progress)

    run = _run(settings, work)
    counts = " ".join(f"{k}={v}" for k, v in run.counts.items())
    console.print(f"{name}: {run.status} {counts} {run.output or ''}".rstrip())
    if run.error:
        console.print(f"error: {run.error}")
    if run.status != "succeeded":
        raise typer.Exit(1)
