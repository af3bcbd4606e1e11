"""Secrets at rest (issue 11 item 6), on SQLite (embedded) and PostgreSQL + Redis (distributed).

Identity's private signing keys, integration's kept exporter secret and its cached access tokens
are ciphertext in the stores, readable after a restart; `mercato secrets rotate` re-encrypts
them (and seals rows an older version wrote in clear); SQLite files are 0600 in a 0700 data dir;
a distributed process without MERCATO_SECRETS_KEY refuses to start with one line.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import select, update

from mercato.app import load_modules
from mercato.identity.contracts import ExporterHandover
from mercato.identity.tables import signing_keys
from mercato.integration.tables import client_credentials, token_cache
from mercato.platform.runtime import ConfigurationError, Platform
from mercato.platform.secrets import SecretBox, parse_keys
from mercato.platform.settings import Settings
from mercato.platform.token_stores import StoredToken
from mercato.secrets_cli import rotate
from tests.harness import Stack, embedded_settings, stack

ACCESS = "eyJhbGciOiJFUzI1NiJ9.cached-access-token.sig"
SERVICES = ["accounts", "identity", "integration"]


def keyed(settings: Settings, value: str) -> Settings:
    return settings.model_copy(update={"secrets_key": SecretStr(value)})


def only(key: str) -> SecretBox:
    return SecretBox(parse_keys(key))


async def stored(s: Stack) -> dict[str, Any]:
    """What the stores hold: signing key PEMs, the kept exporter secret, the cached token."""
    async with s.platform.databases["identity"].read() as conn:
        pems = (await conn.execute(select(signing_keys.c.private_pem))).scalars().all()
    async with s.platform.databases["integration"].read() as conn:
        secret = (await conn.execute(select(client_credentials.c.client_secret))).scalar_one()
        sql_token = (
            await conn.execute(select(token_cache.c.access_token).where(token_cache.c.name == "t"))
        ).scalar()
    redis_token = None
    if s.platform.shared.redis is not None:
        key = f"{s.settings.redis_prefix}:integration:token:t"
        raw = await s.platform.shared.redis.hget(key, "access_token")
        redis_token = raw.decode() if raw is not None else None
    return {"pems": list(pems), "secret": secret, "token": redis_token or sql_token}


async def readable(s: Stack, exporter_secret: str) -> None:
    """Everything opens: identity signs, the exporter secret and the cached token are known."""
    keyring = s.platform.contexts["identity"].deps.keyring
    await keyring.load()
    assert (await keyring.signing_key()).kid
    runtime = s.platform.contexts["integration"].deps
    runtime.exporter.credentials = None  # read it from the database
    runtime._exporter = None
    assert (await runtime.exporter_credentials()) == ("mercato-exporter", exporter_secret)
    token = await runtime.store.load_token("t")
    assert token is not None and token.access_token == ACCESS


def assert_sealed(values: dict[str, Any], exporter_secret: str) -> None:
    assert values["pems"] and all(p.startswith("fernet:") for p in values["pems"])
    assert not any("PRIVATE KEY" in p for p in values["pems"])
    assert values["secret"].startswith("fernet:") and exporter_secret not in values["secret"]
    assert values["token"].startswith("fernet:") and ACCESS not in values["token"]


async def test_secrets_are_ciphertext_readable_after_restart_and_rotated(
    backend: Settings,
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings = keyed(backend, old) if backend.distributed else backend
    async with stack(settings, SERVICES) as s:
        handed = s.platform.shared.handovers.of(ExporterHandover).credentials
        assert handed is not None
        exporter_secret = handed.client_secret
        runtime = s.platform.contexts["integration"].deps
        await runtime.exporter_credentials()
        await runtime.store.save_token("t", StoredToken(ACCESS, 0.0, 4e9), now=0.0)
        values = await stored(s)
        assert_sealed(values, exporter_secret)
        old = old if backend.distributed else (settings.data_dir / "secrets.key").read_text()
        assert only(old).open(values["secret"]) == exporter_secret
    async with stack(settings, SERVICES) as s:  # a restart reads them all
        await readable(s, exporter_secret)

    # Rotation: "new,old" everywhere, then `mercato secrets rotate`; afterwards "new" alone.
    both = keyed(settings, f"{new},{old.strip()}")
    counts = await rotate(both)
    assert counts["signing keys"] >= 1 and counts["client secrets"] == 1
    assert counts.get("cached tokens (Redis)", counts["cached tokens"]) == 1
    async with stack(keyed(settings, new), SERVICES) as s:
        values = await stored(s)
        assert_sealed(values, exporter_secret)
        assert only(new).open(values["secret"]) == exporter_secret
        await readable(s, exporter_secret)


async def test_rows_written_in_clear_stay_readable_and_get_sealed_by_rotate(
    database_url: str, data_dir: Path
) -> None:
    key = Fernet.generate_key().decode()
    # SQLite: a file per service under the data dir (the fixture's one file would be shared).
    shared = database_url if database_url.startswith("postgresql") else None
    settings = embedded_settings(data_dir, database_url=shared, secrets_key=key)
    async with stack(settings, SERVICES) as s:
        handed = s.platform.shared.handovers.of(ExporterHandover).credentials
        assert handed is not None
        exporter_secret = handed.client_secret
        runtime = s.platform.contexts["integration"].deps
        await runtime.exporter_credentials()
        await runtime.store.save_token("t", StoredToken(ACCESS, 0.0, 4e9), now=0.0)
        box = only(key)
        # What an older version wrote: everything in clear.
        async with s.platform.databases["identity"].transaction() as conn:
            for kid, pem in (
                await conn.execute(select(signing_keys.c.kid, signing_keys.c.private_pem))
            ).all():
                clear = box.open(pem)
                await conn.execute(
                    update(signing_keys).where(signing_keys.c.kid == kid).values(private_pem=clear)
                )
        async with s.platform.databases["integration"].transaction() as conn:
            await conn.execute(update(client_credentials).values(client_secret=exporter_secret))
            await conn.execute(update(token_cache).values(access_token=ACCESS))
        assert not (await stored(s))["secret"].startswith("fernet:")
    async with stack(settings, SERVICES) as s:
        await readable(s, exporter_secret)
    await rotate(settings)
    async with stack(settings, SERVICES) as s:
        assert_sealed(await stored(s), exporter_secret)
        await readable(s, exporter_secret)


async def test_database_files_are_0600_in_a_0700_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o755)
    earlier = data_dir / "catalog.db"  # left readable by an older version
    earlier.touch(mode=0o644)
    earlier.chmod(0o644)
    async with stack(embedded_settings(data_dir), [*SERVICES, "catalog"]):
        files = sorted(data_dir.glob("*.db*"))
        assert {f.name for f in files} >= {"identity.db", "integration.db", "catalog.db"}
        for path in [*files, data_dir / "secrets.key"]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_distributed_without_a_key_refuses_in_one_line(
    data_dir: Path, redis_url: str, rabbitmq_url: str
) -> None:
    settings = Settings(data_dir=data_dir, redis_url=redis_url, broker_url=rabbitmq_url)
    with pytest.raises(ConfigurationError, match="MERCATO_SECRETS_KEY"):
        Platform(settings, load_modules(), role="worker")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
    env |= {
        "MERCATO_DATA_DIR": str(data_dir),
        "MERCATO_REDIS_URL": redis_url,
        "MERCATO_BROKER_URL": rabbitmq_url,
        "MERCATO_ISSUER": "http://127.0.0.1:9",
        "MERCATO_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:9/none",
    }
    done = subprocess.run(
        [sys.executable, "-m", "mercato.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    output = (done.stdout + done.stderr).strip()
    assert "MERCATO_SECRETS_KEY" in output and "Traceback" not in output, output
    assert len(output.splitlines()) == 1, output
    assert not (data_dir / "secrets.key").exists()  # nothing generated behind its back
