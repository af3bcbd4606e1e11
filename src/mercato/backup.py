"""`mercato backup DEST` and `mercato restore SRC`: every service's database, with a manifest.

A backup runs beside a serving platform: each SQLite database is copied with SQLite's online
backup API, each PostgreSQL database holding services' schemas is dumped by `pg_dump` (one
snapshot for all the schemas it holds). The manifest, written last, names the services, the
Alembic revisions of each history, the time and every file's SHA-256: a backup without it is
partial, and restore refuses it.

Databases are copied one after another, so an event may be marked sent in its producer's copy
while its consumer's copy was taken before it arrived (or, with a broker, while it waited in a
queue, which no backup holds). A restore therefore marks unsent again every event sent since a
while before the backup started (`REPLAY_WINDOW`): the relays send them again when the platform
starts, and the consumers' inboxes drop those they had applied. Nothing stays pending for ever.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from mercato import __version__
from mercato.accounts.module import CREDENTIALS_FILE
from mercato.app import load_modules
from mercato.platform.clock import utcnow
from mercato.platform.db import Database
from mercato.platform.migrations import EVENTS_HISTORY, MigrationHistory
from mercato.platform.secrets import KEY_FILE
from mercato.platform.service import ServiceModule
from mercato.platform.settings import Settings, get_settings
from mercato.platform.snapshot import (
    SnapshotError,
    pg_dump,
    pg_restore,
    replay_recent,
    sha256_of,
    sqlite_backup,
    sqlite_heads,
    sqlite_path,
)

MANIFEST = "manifest.json"
FORMAT = "mercato-backup/1"
# Events sent this long before a backup started are sent again after a restore. Longer than a
# broker queue holds an event in practice; shorter than the inboxes remember (a week).
REPLAY_WINDOW = timedelta(hours=1)
# Data-dir files a restored installation needs: the key that opens its secrets at rest, and the
# generated admin's credentials (both 0600).
DATA_FILES = (KEY_FILE, CREDENTIALS_FILE)


@dataclass(frozen=True)
class BackupReport:
    """What a backup wrote."""

    path: Path
    services: list[str]
    files: int


def _histories(module: ServiceModule[Any]) -> list[MigrationHistory]:
    return [EVENTS_HISTORY, *([module.migrations] if module.migrations else [])]


def backup(settings: Settings, destination: Path) -> BackupReport:
    """Snapshot every service's database and the data dir's keys into `destination` (new or
    empty), manifest last."""
    if destination.exists() and any(destination.iterdir()):
        raise SnapshotError(f"{destination} is not empty: back up into a new directory")
    destination.mkdir(mode=0o700, parents=True, exist_ok=True)
    started = utcnow()
    modules = load_modules()
    services: dict[str, Any] = {}
    dumps: dict[str, list[str]] = {}  # PostgreSQL URL -> the schemas it holds
    for module in modules:
        url = settings.database_url_for(module.name)
        source = sqlite_path(url)
        tables = [history.version_table for history in _histories(module)]
        if source is None:
            dumps.setdefault(url, []).append(module.name)
            services[module.name] = {"backend": "postgresql", "version_tables": tables}
            continue
        target = destination / f"{module.name}.db"
        sqlite_backup(source, target)
        services[module.name] = {
            "backend": "sqlite",
            "file": target.name,
            "heads": sqlite_heads(target, tables),
        }
    files: dict[str, str] = {}
    for index, (url, schemas) in enumerate(sorted(dumps.items())):
        name = f"postgresql-{index}.dump"
        pg_dump(url, schemas, destination / name)
        heads = asyncio.run(_pg_heads(url, {s: services[s]["version_tables"] for s in schemas}))
        for schema in schemas:
            services[schema].update(file=name, heads=heads[schema])
    for service in services.values():
        service.pop("version_tables", None)
        files[service["file"]] = ""
    for name in DATA_FILES:
        if (settings.data_dir / name).is_file():
            shutil.copy2(settings.data_dir / name, destination / name)
            os.chmod(destination / name, 0o600)
            files[name] = ""
    checksums = {name: sha256_of(destination / name) for name in sorted(files)}
    manifest = {
        "format": FORMAT,
        "mercato_version": __version__,
        "started_at": started.isoformat(),
        "finished_at": utcnow().isoformat(),
        "services": services,
        "files": checksums,
    }
    temporary = destination / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.chmod(temporary, 0o600)
    temporary.replace(destination / MANIFEST)
    return BackupReport(destination, sorted(services), len(checksums))


async def _pg_heads(url: str, tables: dict[str, list[str]]) -> dict[str, dict[str, list[str]]]:
    # Read after the dump: a migration between the two is not something a serving platform does.
    from sqlalchemy import text

    heads: dict[str, dict[str, list[str]]] = {}
    for schema, names in tables.items():
        database = Database(schema, url)
        try:
            async with database.read() as conn:
                heads[schema] = {}
                for table in names:
                    rows = await conn.execute(text(f'SELECT version_num FROM "{table}"'))  # noqa: S608
                    heads[schema][table] = sorted(row[0] for row in rows)
        finally:
            await database.dispose()
    return heads


def read_manifest(source: Path) -> dict[str, Any]:
    """The manifest of a backup, checked whole: every file present with its checksum, every
    service of this installation there, every revision known to this code."""
    path = source / MANIFEST
    if not path.is_file():
        raise SnapshotError(f"{source} has no {MANIFEST}: not a backup, or a partial one")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise SnapshotError(f"{path} is not valid JSON: the backup is damaged") from None
    if manifest.get("format") != FORMAT:
        raise SnapshotError(f"{source} is not a {FORMAT} backup")
    for name, expected in manifest.get("files", {}).items():
        if not (source / name).is_file():
            raise SnapshotError(f"{name} is missing from {source}: the backup is partial")
        if sha256_of(source / name) != expected:
            raise SnapshotError(f"{name} in {source} does not match its checksum: damaged")
    modules = {module.name: module for module in load_modules()}
    held = set(manifest.get("services", {}))
    if held != set(modules):
        missing, extra = sorted(set(modules) - held), sorted(held - set(modules))
        raise SnapshotError(
            f"the backup does not match this installation (missing {missing or 'none'}, "
            f"unknown {extra or 'none'})"
        )
    for name, entry in manifest["services"].items():
        for history in _histories(modules[name]):
            for revision in entry.get("heads", {}).get(history.version_table, []):
                if not _known(history, revision):
                    raise SnapshotError(
                        f"{name}'s schema is at {revision}, which this version of Mercato "
                        "does not know: restore it with the version that made it"
                    )
    return manifest


def _known(history: MigrationHistory, revision: str) -> bool:
    # Imported here: every `mercato` command imports this module, `mercato run` among them.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(history.path))
    try:
        return ScriptDirectory.from_config(config).get_revision(revision) is not None
    except Exception:  # alembic says "unknown revision" with several exception types
        return False


def restore(settings: Settings, source: Path) -> list[str]:
    """Fill an empty data dir (or empty PostgreSQL schemas) from the backup at `source`; then
    mark recently sent events unsent so the platform drains what was in flight. Answers the
    services restored."""
    manifest = read_manifest(source)
    services: dict[str, Any] = manifest["services"]
    targets = {name: settings.database_url_for(name) for name in services}
    for name, entry in services.items():
        kind = "postgresql" if sqlite_path(targets[name]) is None else "sqlite"
        if kind != entry["backend"]:
            raise SnapshotError(
                f"{name} was backed up from {entry['backend']} but is configured on {kind} here"
            )
    _refuse_non_empty(settings, targets)
    asyncio.run(_refuse_pg_schemas(targets))
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    restored_dumps: set[str] = set()
    for name, entry in services.items():
        path = sqlite_path(targets[name])
        if path is None:
            if entry["file"] not in restored_dumps:
                pg_restore(targets[name], source / entry["file"])
                restored_dumps.add(entry["file"])
            continue
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.restoring")
        shutil.copyfile(source / entry["file"], temporary)
        os.chmod(temporary, 0o600)
        temporary.replace(path)
    for name in DATA_FILES:
        if name in manifest["files"]:
            shutil.copyfile(source / name, settings.data_dir / name)
            os.chmod(settings.data_dir / name, 0o600)
    since = datetime.fromisoformat(manifest["started_at"]) - REPLAY_WINDOW
    asyncio.run(_replay(targets, since))
    return sorted(services)


def _refuse_non_empty(settings: Settings, targets: dict[str, str]) -> None:
    present = [
        str(path)
        for path in [sqlite_path(url) for url in targets.values()]
        if path is not None and path.exists()
    ]
    present += [
        str(settings.data_dir / name) for name in DATA_FILES if (settings.data_dir / name).exists()
    ]
    if present:
        raise SnapshotError(
            f"restore fills an empty data dir; {present[0]} already exists "
            "(restore into a new MERCATO_DATA_DIR, or move the old one away)"
        )


async def _refuse_pg_schemas(targets: dict[str, str]) -> None:
    from sqlalchemy import text

    for name, url in targets.items():
        if sqlite_path(url) is not None:
            continue
        database = Database(name, url)
        try:
            async with database.read() as conn:
                found = await conn.execute(
                    text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :s"),
                    {"s": name},
                )
                if found.first() is not None:
                    raise SnapshotError(
                        f"restore fills an empty database; schema {name} already exists there"
                    )
        finally:
            await database.dispose()


async def _replay(targets: dict[str, str], since: datetime) -> None:
    for name, url in targets.items():
        database = Database(name, url)
        try:
            await replay_recent(database, since)
        finally:
            await database.dispose()


def register(app: typer.Typer) -> None:
    """Add `mercato backup` and `mercato restore` to the command."""

    @app.command("backup")
    def backup_command(
        destination: Annotated[Path, typer.Argument(help="A new (or empty) directory.")],
        data_dir: Annotated[Path | None, typer.Option()] = None,
    ) -> None:
        """Snapshot every service's database while the platform serves, with a manifest."""
        try:
            report = backup(_settings(data_dir), destination)
        except SnapshotError as exc:
            _fail(str(exc))
        typer.echo(
            f"backed up {', '.join(report.services)} ({report.files} files) to {report.path}"
        )

    @app.command("restore")
    def restore_command(
        source: Annotated[Path, typer.Argument(help="A directory `mercato backup` wrote.")],
        data_dir: Annotated[Path | None, typer.Option()] = None,
    ) -> None:
        """Fill an empty data dir (or database) from a backup; the platform then drains the
        events that were in flight."""
        try:
            services = restore(_settings(data_dir), source)
        except SnapshotError as exc:
            _fail(str(exc))
        typer.echo(f"restored {', '.join(services)} from {source}")


def _settings(data_dir: Path | None) -> Settings:
    if data_dir is not None:
        os.environ["MERCATO_DATA_DIR"] = str(data_dir)
    get_settings.cache_clear()
    return get_settings()


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(2)
