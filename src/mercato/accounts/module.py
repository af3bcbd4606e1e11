"""How the platform runs accounts: its settings, router, migrations and first-start
provisioning."""

from __future__ import annotations

import os
from pathlib import Path

from mercato.accounts import service
from mercato.accounts.api import build_router
from mercato.accounts.settings import AccountsSettings
from mercato.platform.migrations import MigrationHistory
from mercato.platform.passwords import hash_password
from mercato.platform.service import ServiceContext, ServiceModule

CREDENTIALS_FILE = "admin-credentials.txt"


async def provision_admin(ctx: ServiceContext[AccountsSettings]) -> None:
    """Create the bootstrap admin on first start (DESIGN §6); later starts change nothing."""
    settings = ctx.settings
    admin = service.admin_to_provision(settings.admin_email, settings.admin_password)

    def write_credentials(created: service.AdminBootstrap) -> None:
        _write_private(
            settings.data_dir / CREDENTIALS_FILE,
            "Mercato bootstrap admin (generated on first start; change the password)\n"
            f"username: {created.username}\nemail: {created.email}\n"
            f"password: {created.password}\n",
        )

    await service.bootstrap_admin(ctx.uow, hash_password, admin, write_credentials)


def _write_private(path: Path, text: str) -> None:
    # Created with 0600 from the start: no moment where another user could read the secret.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


MODULE = ServiceModule(
    name="accounts",
    migrations=MigrationHistory(Path(__file__).parent / "migrations", "alembic_version_accounts"),
    # Accounts' own settings are its only dependencies (read once per process).
    dependencies=lambda _: AccountsSettings(),
    router=build_router,
    on_start=provision_admin,
)
