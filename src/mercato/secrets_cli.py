"""`mercato secrets …`: the key-encryption key of secrets at rest (docs/secrets.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from mercato.identity.module import MODULE as IDENTITY
from mercato.identity.settings import IdentitySettings
from mercato.identity.wiring import build_keyring
from mercato.integration.module import MIGRATIONS as INTEGRATION_MIGRATIONS
from mercato.integration.runtime import Integration
from mercato.integration.settings import IntegrationSettings
from mercato.platform.db import Database
from mercato.platform.migrations import upgrade
from mercato.platform.secrets import SecretsKeyError, generate_key, secret_box
from mercato.platform.settings import Settings
from mercato.platform.uow import UnitOfWork

secrets_app = typer.Typer(help="Secrets at rest: the key-encryption key.", no_args_is_help=True)
console = Console(soft_wrap=True)


async def rotate(settings: Settings) -> dict[str, int]:
    """Re-encrypt every stored secret with the first key of `MERCATO_SECRETS_KEY` (or the data
    dir's key file): identity's signing keys, integration's kept secrets and cached tokens.
    Values stored in clear are sealed. Answers how many of each were rewritten."""
    box = secret_box(settings)
    counts: dict[str, int] = {}
    identity = Database("identity", settings.database_url_for("identity"))
    try:
        await upgrade(identity, [IDENTITY.migrations] if IDENTITY.migrations else [])
        keyring = build_keyring(
            IdentitySettings(),
            lambda: UnitOfWork(identity, "identity"),
            identity.read,
            secrets=box,
        )
        counts["signing keys"] = await keyring.reseal()
    finally:
        await identity.dispose()
    integration = Database("integration", settings.database_url_for("integration"))
    redis: Any = None
    if settings.redis_url:
        import redis.asyncio as redis_asyncio

        redis = redis_asyncio.from_url(settings.redis_url)
    runtime = Integration(
        settings=settings,
        integ=IntegrationSettings(),
        database=integration,
        redis=redis,
        secrets=box,
    )
    try:
        await upgrade(integration, [INTEGRATION_MIGRATIONS])
        counts |= await runtime.reseal_secrets()
    finally:
        await runtime.stop()
        if redis is not None:
            await redis.aclose()
        await integration.dispose()
    return counts


@secrets_app.command("rotate")
def rotate_command(
    data_dir: Annotated[Path | None, typer.Option(help="Where the SQLite files live.")] = None,
) -> None:
    """Re-encrypt stored secrets with the first key of MERCATO_SECRETS_KEY ("new,old")."""
    settings = Settings() if data_dir is None else Settings(data_dir=data_dir)
    try:
        counts = asyncio.run(rotate(settings))
    except SecretsKeyError as exc:
        console.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    console.print(
        "re-encrypted: " + ", ".join(f"{name} {count}" for name, count in counts.items()),
        markup=False,
    )


@secrets_app.command("generate-key")
def generate_key_command() -> None:
    """Print a new key for MERCATO_SECRETS_KEY (nothing is stored)."""
    print(generate_key())  # the key alone on stdout, for `$(...)`
