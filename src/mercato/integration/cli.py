"""`mercato partner`, `mercato integration ...`, `mercato jobs ...` (added to mercato.cli).

While `mercato run` serves the same data dir (its `instance.json`, see `mercato.platform.instance`),
`jobs list`, `jobs run` and `integration token-status` ask that process over its HTTP API as an
admin, so they report what it does (its demo partner, its exporter) and run jobs there; with no
instance running they work on the database in this process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mercato.integration.domain import EXPORT_PRODUCTS, FINISHED
from mercato.integration.module import MIGRATIONS
from mercato.integration.runtime import SERVICE, Integration
from mercato.integration.settings import IntegrationSettings
from mercato.platform import instance as instances
from mercato.platform.config import load
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
    load(Settings)  # a bad value: one line (SettingsError), before anything is opened
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    # A line per request to the running instance would bury the command's own output.
    logging.getLogger("httpx").setLevel(logging.WARNING)
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
        settings=settings, integ=load(IntegrationSettings), database=database, redis=redis
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
    if isinstance(value, str):  # from the instance's JSON
        value = datetime.fromisoformat(value)
    return value.isoformat(timespec="seconds") if value is not None else "-"


@contextmanager
def _instance_admin(settings: Settings) -> Iterator[httpx.Client | None]:
    """An admin session on the instance serving this data dir, or None when none runs."""
    found = instances.running(settings.data_dir)
    if found is None:
        yield None
        return
    with instances.admin_session(found, *_admin_credentials(settings, found)) as client:
        yield client


def _admin_credentials(settings: Settings, found: instances.Instance) -> tuple[str, str]:
    if settings.admin_password:
        return settings.admin_email or "admin", settings.admin_password
    if found.admin_credentials:
        generated = instances.read_credentials(Path(found.admin_credentials))
        if generated is not None:
            return generated
    raise instances.InstanceError(
        f"mercato is running at {found.url} on this data dir; to ask it, set "
        "MERCATO_ADMIN_PASSWORD (and MERCATO_ADMIN_EMAIL) to an admin's"
    )


@integration_app.command("token-status")
def token_status(data_dir: DataDir = None) -> None:
    """Each upstream's token: cached or not, expiry, renewal, budget used (never the token)."""
    settings = _settings(data_dir)
    with _instance_admin(settings) as remote:
        if remote is not None:
            statuses = instances.get_json(remote, "/api/v1/integration/token/status")
        else:
            local = _run(settings, lambda rt: rt.service.token_status())
            statuses = {name: st.model_dump() for name, st in local.items()}
    table = Table("upstream", "token", "expires at", "renew at", "requests last hour", "error")
    for name, st in statuses.items():
        table.add_row(
            name,
            "cached" if st["has_token"] else "none",
            _when(st["expires_at"]),
            _when(st["renew_at"]),
            f"{st['requests_last_hour']}/{st['budget_per_hour']}",
            st.get("last_error") or "",
        )
    if not statuses:
        console.print("no upstream with a token configured")
        return
    console.print(table)


@jobs_app.command("list")
def jobs_list(data_dir: DataDir = None) -> None:
    """Each job: schedule, enabled or why not, last run, next run."""
    settings = _settings(data_dir)
    with _instance_admin(settings) as remote:
        if remote is not None:
            views = instances.get_json(remote, "/api/v1/jobs", limit=500)["items"]
        else:
            views = [_view_dict(view) for view in _run(settings, lambda rt: rt.service.list_jobs())]
    table = Table("job", "schedule", "state", "last run", "next run")
    for view in views:
        last = view["last_run"]
        table.add_row(
            view["name"],
            view["schedule"],
            "enabled" if view["enabled"] else f"disabled: {view['disabled_reason']}",
            f"{last['status']} {_when(last['requested_at'])}" if last else "-",
            _when(view["next_run_at"]),
        )
    console.print(table)


def _view_dict(view: Any) -> dict[str, Any]:
    """A local job view in the shape of the API's answer (so both print alike)."""
    values = dict(view.__dict__)
    values["last_run"] = dict(view.last_run.__dict__) if view.last_run else None
    return values


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
    """Run a job once, here and now (recorded like a scheduled run): in the `mercato run`
    serving this data dir when one does, else in this process."""
    settings = _settings(data_dir)
    with _instance_admin(settings) as remote:
        if remote is not None:
            _report(name, _run_remote(remote, name))
            return

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

    _report(name, dict(_run(settings, work).__dict__))


def _run_remote(client: httpx.Client, name: str) -> dict[str, Any]:
    """Queue a run on the instance and wait for its scheduler to finish it."""
    try:
        answer = client.post(f"/api/v1/jobs/{name}/run")
    except httpx.HTTPError as exc:
        raise instances.InstanceError(f"POST /api/v1/jobs/{name}/run failed: {exc}") from None
    if answer.status_code != 202:
        raise instances.InstanceError(instances.detail(answer))
    run_id = answer.json()["run_id"]
    console.print(f"{name}: run {run_id} queued on {client.base_url}")
    while True:
        page = instances.get_json(client, f"/api/v1/jobs/{name}/runs", limit=50)
        for run in page["items"]:
            if run["id"] == run_id and run["status"] in FINISHED:
                return dict(run)
        time.sleep(0.5)  # the instance's scheduler polls its queue about once a second


def _report(name: str, run: dict[str, Any]) -> None:
    counts = " ".join(f"{k}={v}" for k, v in run["counts"].items())
    console.print(f"{name}: {run['status']} {counts} {run['output'] or ''}".rstrip())
    if run["error"]:
        console.print(f"error: {run['error']}")
    if run["status"] != "succeeded":
        raise typer.Exit(1)
