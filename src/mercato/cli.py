"""The `mercato` command."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mercato import __version__
from mercato.identity.cli import identity_app
from mercato.integration.cli import register as register_integration
from mercato.platform.events.admin import Redeliver
from mercato.platform.events.envelope import Envelope
from mercato.platform.logging import configure_logging
from mercato.platform.runtime import Platform
from mercato.platform.settings import Settings, get_settings

app = typer.Typer(help="Mercato: event-driven commerce backend.", no_args_is_help=True)
events_app = typer.Typer(help="Inspect and operate the event backbone.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(identity_app, name="identity")
register_integration(app)  # `mercato partner`, `mercato integration ...`, `mercato jobs ...`
# soft_wrap: URLs stay whole when the output is a pipe or a log file, not an 80-column wrap.
console = Console(soft_wrap=True)


def _settings(data_dir: Path | None = None) -> Settings:
    if data_dir is not None:
        os.environ["MERCATO_DATA_DIR"] = str(data_dir)
        get_settings.cache_clear()
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    return settings


def _serve(app_obj: object, host: str, port: int, fd: int | None = None) -> None:
    import uvicorn

    config = uvicorn.Config(
        app_obj,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    if fd is None:
        uvicorn.Server(config).run()
        return
    import socket

    # A socket the parent bound and handed over (no window in which another process could
    # take the port). Not uvicorn's own `fd=`, which wraps every descriptor as AF_UNIX: read
    # from the descriptor, the family is TCP's, so the loop treats it as such (asyncio sets
    # TCP_NODELAY on AF_INET/AF_INET6 connections only). uvicorn listens on it once the app
    # has started: until this process is ready a connection is refused (a proxy tries another
    # replica) rather than left waiting in the backlog.
    sock = socket.socket(fileno=fd)  # family and type read from the descriptor
    if sock.type != socket.SOCK_STREAM:
        raise typer.BadParameter(f"descriptor {fd} is not a stream socket")
    console.print(f"serving on {sock.getsockname()} (descriptor {fd})")
    uvicorn.Server(config).run(sockets=[sock])


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
    """Run every service in one process (embedded mode); migrations are applied on start."""
    from mercato.app import build_platform

    if demo:
        _enable_demo()
    if fd is not None:
        host, port = _bound_address(fd)
    # The export job reaches identity and catalog at this process's own address.
    os.environ.setdefault("MERCATO_PUBLIC_URL", f"http://{_local(host)}:{port}")
    settings = _settings(data_dir)
    platform = build_platform(settings)
    base = f"http://{host}:{port}"
    console.print(f"[bold]Mercato {__version__}[/bold] embedded — data in {settings.data_dir}")
    console.print(f"  API docs   {base}/docs   (ReDoc {base}/redoc)")
    console.print(f"  health     {base}/health   metrics {base}/metrics")
    creds = settings.data_dir / "admin-credentials.txt"
    if not settings.admin_password:
        console.print(f"  admin      credentials in {creds} (written on first start)")
    _serve(platform.create_app("Mercato"), host, port, fd)


def _bound_address(fd: int) -> tuple[str, int]:
    """Where an inherited socket is bound, so the banner and the public URL name it."""
    import socket

    with socket.socket(fileno=socket.dup(fd)) as sock:
        address = sock.getsockname()
    return str(address[0]), int(address[1])


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104


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

    settings = _settings()
    if service == GATEWAY:
        import logging

        from mercato.gateway_app import create_gateway_app

        # Each /ready asks every replica; a log line per probe would bury everything else.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        _serve(create_gateway_app(), host, port, fd)
        return
    from mercato.app import create_service_app

    _serve(create_service_app(service, settings), host, port, fd)


@app.command()
def worker(
    services: Annotated[
        list[str] | None, typer.Option("--services", "-s", help="Services to work for.")
    ] = None,
) -> None:
    """Run outbox relays, event consumers and schedulers (distributed mode)."""
    from mercato.app import build_platform

    settings = _settings()
    platform = build_platform(settings, services, role="worker", migrate_on_start=False)

    async def main() -> None:
        import signal

        await platform.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
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

    settings = _settings(data_dir)
    platform = build_platform(settings, [service] if service else None)

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
                await platform.transport.start()
                for name, database in platform.databases.items():
                    try:
                        event_id = await replay_dead_letter(
                            database, replay, _queue_redeliver(platform, name)
                        )
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


def _queue_redeliver(platform: Platform, service: str) -> Redeliver:
    """Redelivery from a separate process: straight into the consumer's durable queue."""
    from mercato.platform.events.inprocess import InProcessQueue, InProcessTransport

    async def redeliver(consumer: str, envelope: Envelope) -> None:
        if isinstance(platform.transport, InProcessTransport):
            await InProcessQueue(platform.consumers[consumer]).enqueue([envelope])
        else:
            await platform.transport.redeliver(consumer, envelope)

    return redeliver


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
        console.print(f"  API docs   {cluster.base_url}/docs   (ReDoc {cluster.base_url}/redoc)")
        console.print(f"  readiness  {cluster.base_url}/ready   (every service's replicas)")
        console.print(f"  one service's own docs: {cluster.base_url}/services/catalog/docs")
        console.print("  Ctrl-C stops everything")
        while not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


def main() -> None:
    """Entry point of the console script."""
    app()


if __name__ == "__main__":
    main()
