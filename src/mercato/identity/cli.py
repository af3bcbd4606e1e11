"""`mercato identity …`: operating identity from the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mercato.identity.module import MODULE
from mercato.identity.settings import IdentitySettings
from mercato.identity.wiring import build_keyring
from mercato.platform.config import load
from mercato.platform.db import Database
from mercato.platform.migrations import upgrade
from mercato.platform.secrets import secret_box
from mercato.platform.settings import Settings
from mercato.platform.uow import UnitOfWork

identity_app = typer.Typer(help="Operate identity (signing keys).", no_args_is_help=True)
console = Console()


async def rotate(settings: Settings) -> tuple[str, list[str]]:
    """Rotate identity's signing key in its database; answers the new kid and the published
    ones. A running identity picks the new key up on its next key refresh."""
    database = Database("identity", settings.database_url_for("identity"))
    try:
        await upgrade(database, [MODULE.migrations] if MODULE.migrations else [])
        keyring = build_keyring(
            load(IdentitySettings),
            lambda: UnitOfWork(database, "identity"),
            database.read,
            secrets=secret_box(settings),
        )
        await keyring.provision()
        kid = await keyring.rotate()
        return kid, [key["kid"] for key in keyring.jwks()["keys"]]
    finally:
        await database.dispose()


@identity_app.command("rotate-key")
def rotate_key(
    data_dir: Annotated[Path | None, typer.Option(help="Where the SQLite files live.")] = None,
) -> None:
    """Make a new signing key current; the previous one keeps verifying until its tokens expire."""
    # load: a bad setting is one line (mercato.cli prints it), before the database is opened.
    settings = load(Settings) if data_dir is None else load(Settings, data_dir=data_dir)
    kid, published = asyncio.run(rotate(settings))
    console.print(f"new signing key {kid}; published: {', '.join(published)}")
