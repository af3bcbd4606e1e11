"""The `mercato` command."""

from __future__ import annotations

import asyncio
import enum
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from typer.exceptions import TyperException

from mercato import __version__
from mercato.backup import register as register_backup
from mercato.identity.cli import identity_app
from mercato.identity.settings import IdentitySettings
from mercato.integration.cli import register as register_integration
from mercato.integration.settings import IntegrationSettings
from mercato.platform import instance as instances
from mercato.platform.config import SettingsError, load
from mercato.platform.logging import configure_logging
from mercato.platform.runtime import ConfigurationError
from mercato.platform.settings import Settings, get_settings
from mercato.platform.tracing import configure_tracing
from mercato.secrets_cli import secrets_app

app = typer.Typer(help="Mercato: event-driven commerce backend.", no_args_is_help=True)
events_app = typer.Typer(help="Inspect and operate the event backbone.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(identity_app, name="identity")
app.add_typer(secrets_app, name="secrets")
register_integration(app)  # `mercato partner`, `mercato integration ...`, `mercato jobs ...`
register_backup(app)  # `mercato backup DEST`, `mercato restore SRC`
# soft_wrap: URLs stay whole when the output is a pipe or a log file, not an 80-column wrap.
console = Console(soft_wrap=True)


def _settings(data_dir: Path | None = None) -> Settings:
    """This process's settings, every services' checked first: a bad value is one line
    (SettingsError) before anything is opened or written."""
    if data_dir is not None:
        os.environ["MERCATO_DATA_DIR"] = str(data_dir)
    get_settings.cache_clear()
    for cls in (Settings, IdentitySettings, IntegrationSettings):
        load(cls)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    return settings


def _services(names: list[str], *, extra: tuple[str, ...] = ()) -> list[str]:
    """`names`, each a service of this installation (else a one-line usage error)."""
    from mercato.app import available_services

    known = [*available_services(), *extra]
    for name in names:
        if name not in known:
            raise typer.BadParameter(f"no service {name!r}; services: {', '.join(known)}")
    return names


def _require_issuer(settings: Settings) -> None:
    # Replicas sit behind a gateway or proxy: no process can tell the public URL from where
    # it listens, and a wrong issuer makes every client's discovery check (and `iss`) fail.
    if "issuer" not in settings.model_fields_set:
        raise ConfigurationError(
            "distributed mode (mercato serve / mercato worker) needs MERCATO_ISSUER: the public "
            "URL clients reach identity at (discovery advertises it, tokens carry it as iss)"
        )


def _serve(
    app_obj: object,
    host: str,
    port: int,
    fd: int | None = None,
    *,
    on_listening: Callable[[], None] | None = None,
    on_stopped: Callable[[], None] | None = None,
) -> None:
    from mercato.platform.serving import serve

    serve(
        app_obj,
        host,
        port,
        fd,
        on_listening=on_listening,
        on_stopped=on_stopped,
        say=console.print,
    )


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"mercato {__version__}")


@app.command()
def run(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: Annotated[Path | None, typer.Option(help="Where the SQLite files live.")] = None,
    demo: Annotated[bool, typer.Option(help="Also run the partner sandbox, seeded.")] = False,
    fd: Annotated[
        int | None,
        typer.Option(help="Serve on this inherited, bound socket instead of --host/--port."),
    ] = None,
) -> None:
    """Run every service in one process (embedded mode); migrations are applied on start.

    The issuer and public URL follow where it listens (`--host`/`--port`, or the socket of
    `--fd`), unless `MERCATO_ISSUER` / `MERCATO_PUBLIC_URL` say otherwise (behind a proxy).
    """
    from mercato.accounts.module import CREDENTIALS_FILE
    from mercato.app import build_platform

    if demo:
        _enable_demo()
    if fd is not None:
        from mercato.platform.serving import bound_address

        host, port = bound_address(fd)
    listening = instances.listen_url(host, port)
    settings = _embedded_settings(data_dir, listening)
    configure_tracing("mercato", settings.otel_exporter)
    platform = build_platform(settings)
    base = settings.issuer.rstrip("/")
    console.print(f"[bold]Mercato {__version__}[/bold] embedded — data in {settings.data_dir}")
    console.print(f"  issuer     {settings.issuer}")
    if listening != base:
        console.print(f"  listening  {listening}")
    console.print(f"  console    {base}/console   (sign in as the admin)")
    console.print(f"  API docs   {base}/docs   (ReDoc {base}/redoc)")
    console.print(f"  health     {base}/health   metrics {base}/metrics")
    creds = settings.data_dir / CREDENTIALS_FILE
    if not settings.admin_password:
        console.print(f"  admin      credentials in {creds} (written on first start)")
    pid = os.getpid()

    def record() -> None:
        # Once it listens: a CLI command reading the record finds a process that answers.
        instances.write(
            settings.data_dir,
            instances.Instance(
                url=listening,
                issuer=settings.issuer,
                public_url=os.environ["MERCATO_PUBLIC_URL"],
                pid=pid,
                admin_credentials=str(creds.resolve()) if creds.exists() else None,
            ),
        )

    def forget() -> None:
        instances.remove(settings.data_dir, pid)

    try:
        _serve(
            platform.create_app("Mercato"),
            host,
            port,
            fd,
            on_listening=record,
            on_stopped=forget,
        )
    finally:
        forget()


def _embedded_settings(data_dir: Path | None, listening: str) -> Settings:
    """Settings of `mercato run`: the issuer and public URL default to where it listens."""
    first = _settings(data_dir)  # every value checked, .env included
    integ = load(IntegrationSettings)
    # The export job reaches identity and catalog at this process's own address.
    public = integ.public_url or listening
    os.environ["MERCATO_PUBLIC_URL"] = public
    if "issuer" not in first.model_fields_set:
        # Behind a proxy MERCATO_PUBLIC_URL names the public address, which tokens then carry.
        os.environ["MERCATO_ISSUER"] = integ.public_url or listening
    return _settings()


def _enable_demo() -> None:
    # The demo points the external syncs at an in-process partner sandbox (see integration).
    os.environ.setdefault("MERCATO_DEMO", "true")
    get_settings.cache_clear()


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="The service whose API to serve, or `gateway`.")],
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    fd: Annotated[
        int | None,
        typer.Option(help="Serve on this inherited, bound socket instead of --host/--port."),
    ] = None,
) -> None:
    """Serve one service's HTTP API (distributed mode; run as many replicas as needed).

    `mercato serve gateway` is the gateway's companion: the installation's whole OpenAPI
    document, `/docs`, `/redoc` and a `/ready` over every service's replicas (named in
    `MERCATO_GATEWAY_UPSTREAMS`, JSON `{"service": ["host:port", ...]}`).
    """
    from mercato.gateway import GATEWAY

    _services([service], extra=(GATEWAY,))
    settings = _settings()
    if service == GATEWAY:
        import logging

        from mercato.gateway_app import create_gateway_app

        # Each /ready asks every replica; a log line per probe would bury everything else.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        _serve(create_gateway_app(), host, port, fd)
        return
    from mercato.app import create_service_app

    _require_issuer(settings)
    configure_tracing(f"mercato-{service}", settings.otel_exporter)
    _serve(create_service_app(service, settings), host, port, fd)


@app.command()
def worker(
    services: Annotated[
        list[str] | None, typer.Option("--services", "-s", help="Services to work for.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve this worker's /metrics on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Where --metrics-port listens.")] = "127.0.0.1",
) -> None:
    """Run outbox relays, event consumers and schedulers (distributed mode)."""
    from mercato.app import build_platform

    chosen = _services(services or []) or None
    settings = _settings()
    _require_issuer(settings)
    configure_tracing("mercato-worker", settings.otel_exporter)
    platform = build_platform(settings, chosen, role="worker", migrate_on_start=False)

    async def main() -> None:
        import signal

        await platform.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if metrics_port is not None:
            from mercato.platform.metrics_server import start_metrics_server

            start_metrics_server(platform, metrics_host, metrics_port, stop)
        await stop.wait()
        await platform.stop()

    asyncio.run(main())


@app.command()
def migrate(
    service: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Apply database migrations of every service (or one)."""
    from mercato.app import build_platform

    chosen = _services([service]) if service else None
    settings = _settings(data_dir)
    platform = build_platform(settings, chosen)

    async def main() -> None:
        try:
            await platform.migrate()
        finally:
            for database in platform.databases.values():
                await database.dispose()

    asyncio.run(main())
    console.print(f"migrated: {', '.join(platform.databases)}")


@events_app.command("dead-letters")
def dead_letters(
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    replay: Annotated[str | None, typer.Option(help="Replay this dead letter id.")] = None,
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """List dead letters, or replay one."""
    from mercato.app import build_platform
    from mercato.platform.events.admin import list_dead_letters, replay_dead_letter

    settings = _settings(data_dir)
    platform = build_platform(settings, [service] if service else None, migrate_on_start=False)

    async def main() -> None:
        try:
            if replay:
                # Its consumers' queues are prepared as by a worker: a replay from this process
                # reaches the consumer wherever it runs (in-process: its durable queue table).
                await platform.open_transport()
                for name, database in platform.databases.items():
                    try:
                        event_id = await replay_dead_letter(database, replay, platform.redeliver)
                    except Exception as exc:  # not this service's dead letter
                        if type(exc).__name__ == "NotFound":
                            continue
                        raise
                    console.print(f"replayed {replay} (event {event_id}) for {name}")
                    return
                raise typer.BadParameter(f"no dead letter {replay}")
            table = Table("service", "id", "event type", "attempts", "failed at", "error")
            for name, database in platform.databases.items():
                page = await list_dead_letters(database, skip=0, limit=500)
                for item in page.items:
                    table.add_row(
                        name,
                        item.id,
                        item.event_type,
                        str(item.attempts),
                        item.failed_at.isoformat(),
                        item.error[:80],
                    )
            console.print(table)
        finally:
            await platform.stop()

    asyncio.run(main())


@events_app.command("stats")
def stats(data_dir: Annotated[Path | None, typer.Option()] = None) -> None:
    """Outbox backlog, inbox size and dead letters per service."""
    from mercato.app import build_platform
    from mercato.platform.events.admin import event_stats

    settings = _settings(data_dir)
    platform = build_platform(settings, migrate_on_start=False)

    async def main() -> None:
        table = Table("service", "outbox backlog", "oldest unsent (s)", "inbox", "dead letters")
        try:
            for database in platform.databases.values():
                s = await event_stats(database)
                age = f"{s.oldest_unsent_age_seconds:.1f}" if s.oldest_unsent_age_seconds else "-"
                table.add_row(
                    s.service, str(s.outbox_backlog), age, str(s.inbox_size), str(s.dead_letters)
                )
        finally:
            await platform.stop()
        console.print(table)

    asyncio.run(main())


class Broker(enum.StrEnum):
    """What carries a dev cluster's events."""

    rabbitmq = "rabbitmq"
    kafka = "kafka"


@app.command("dev-cluster")
def dev_cluster(
    port: Annotated[int, typer.Option(help="The gateway's port (0: any free one).")] = 8080,
    replicas: Annotated[int, typer.Option(help="Replicas of each service's API.")] = 2,
    workdir: Annotated[Path, typer.Option(help="Logs, nginx config, data.")] = Path(".devcluster"),
    database: Annotated[str, typer.Option(help="PostgreSQL database (created if missing).")] = (
        "mercato_dev"
    ),
    pg_admin_url: Annotated[str, typer.Option()] = "postgresql://postgres@127.0.0.1:5432/postgres",
    partner_port: Annotated[int, typer.Option(help="Partner sandbox port (0: none).")] = 8100,
    broker: Annotated[
        Broker, typer.Option(help="rabbitmq (on 127.0.0.1:5672) or kafka (a Tansu it starts).")
    ] = Broker.rabbitmq,
) -> None:
    """Distributed mode on this machine: PostgreSQL-backed services, replicas, worker, nginx,
    and the gateway's companion (`mercato serve gateway`) for /openapi.json, /docs and /ready."""
    import signal

    from mercato.devcluster import ClusterConfig, DevCluster, ensure_pg_database

    cluster = DevCluster(
        ClusterConfig(
            workdir=workdir.resolve(),
            database_url=ensure_pg_database(pg_admin_url, database),
            port=port,
            replicas=replicas,
            partner_port=partner_port or None,
            broker="kafka" if broker is Broker.kafka else "rabbitmq",
        )
    )
    console.print(f"starting the dev cluster in {workdir} (logs in {workdir}/logs) ...")
    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    try:
        cluster.start()
        console.print(f"[bold]Mercato dev cluster[/bold] at {cluster.base_url}")
        console.print(f"  {replicas} replicas of each service behind nginx, one worker")
        if cluster.kafka is not None:
            console.print(f"  events over Kafka (Tansu) at {cluster.kafka.bootstrap}")
        console.print(f"  console    {cluster.base_url}/console")
        console.print(f"  API docs   {cluster.base_url}/docs   (ReDoc {cluster.base_url}/redoc)")
        console.print(f"  readiness  {cluster.base_url}/ready   (every service's replicas)")
        console.print(f"  one service's own docs: {cluster.base_url}/services/catalog/docs")
        console.print(f"  worker's metrics {cluster.worker_metrics_url}/metrics")
        console.print("  Ctrl-C stops everything")
        while not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


def main() -> None:
    """Entry point of the console script: every error is one line on stderr, exit code ≠ 0."""
    try:
        code = app(standalone_mode=False)
    except TyperException as exc:  # usage errors, typer.BadParameter
        if type(exc).__name__ == "NoArgsIsHelpError":  # `mercato` (or a group) alone: its help
            if exc.format_message().strip():  # else rich has printed it already
                typer.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        _fail(exc.format_message(), exc.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    except (SettingsError, ConfigurationError, instances.InstanceError) as exc:
        _fail(str(exc), 2)
    except Exception as exc:
        if os.environ.get("MERCATO_LOG_LEVEL", "").upper() == "DEBUG":
            raise  # the traceback, for whoever is debugging
        _fail(f"{type(exc).__name__}: {exc} (MERCATO_LOG_LEVEL=DEBUG shows where)", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(code or 1)


if __name__ == "__main__":
    main()
