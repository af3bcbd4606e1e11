"""Per-run isolation on the real services: a PostgreSQL database, a RabbitMQ vhost, a Redis prefix.

A service that is truly absent makes its tests skip with the reason, except under CI=true,
where it is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid

import pytest

PG_ADMIN_URL = os.environ.get("MERCATO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
RABBIT_HOST = os.environ.get("MERCATO_TEST_RABBIT_HOST", "127.0.0.1")
REDIS_URL = os.environ.get("MERCATO_TEST_REDIS", "redis://127.0.0.1:6379/0")

RUN_ID = os.environ.get("MERCATO_TEST_RUN_ID") or uuid.uuid4().hex[:10]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(service: str, host: str, port: int) -> None:
    """Skip (fail in CI) when the service is not listening."""
    if port_open(host, port):
        return
    reason = f"{service} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: services must be running)")
    pytest.skip(reason)


def require_dev_cluster() -> None:
    """Skip (fail in CI) unless what a dev cluster runs on is here: PostgreSQL, Redis,
    RabbitMQ and nginx."""
    require("PostgreSQL", "127.0.0.1", 5432)
    require("Redis", "127.0.0.1", 6379)
    require("RabbitMQ", RABBIT_HOST, 5672)
    if not os.path.exists("/usr/sbin/nginx"):
        (pytest.fail if IN_CI else pytest.skip)("nginx is not installed")


def create_pg_database(name: str) -> str:
    """Create a fresh PostgreSQL database; returns its asyncpg SQLAlchemy URL."""
    import asyncio

    import asyncpg

    async def _create() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(_create())
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def drop_pg_database(name: str) -> None:
    """Drop a database made by `create_pg_database`."""
    import asyncio

    import asyncpg

    async def _drop() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(_drop())


def rabbitmqctl(*args: str) -> None:
    """Run rabbitmqctl (we are on the broker's machine)."""
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def create_vhost(name: str) -> str:
    """A fresh vhost for guest; returns its AMQP URL."""
    if shutil.which("rabbitmqctl") is None:
        return f"amqp://guest:guest@{RABBIT_HOST}:5672/"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return f"amqp://guest:guest@{RABBIT_HOST}:5672/{name}"


def delete_vhost(name: str) -> None:
    """Remove a vhost made by `create_vhost`."""
    if shutil.which("rabbitmqctl") is not None:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=120
        )
