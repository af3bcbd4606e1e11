"""A distributed Mercato on this machine, without containers (`mercato dev-cluster`).

Starts, as child processes: the migrations, `mercato serve SERVICE` for every service and
replica, one `mercato worker`, optionally the partner sandbox, and nginx in front with the
gateway configuration of `mercato.gateway`. PostgreSQL, Redis and RabbitMQ must be running.
Tests use `DevCluster` directly so they can kill and restart single processes.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mercato.gateway import ROUTES, render_nginx

SERVICES = tuple(ROUTES)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ClusterConfig:
    """What to start and against which backing services."""

    workdir: Path
    database_url: str
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    port: int = 8080
    replicas: int = 2
    partner_port: int | None = None
    # Extra MERCATO_* variables for every process (isolation prefixes in tests, schedules...).
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Child:
    """One child process and how to start it again."""

    name: str
    args: list[str]
    port: int | None
    process: subprocess.Popen[bytes] | None = None


class DevCluster:
    """Owns the child processes of one cluster."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.workdir = config.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs = self.workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.base_url = f"http://127.0.0.1:{config.port}"
        self.children: dict[str, Child] = {}
        self.env = self._environment()

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
        secret_file = self.workdir / "exporter-secret"
        if not secret_file.exists():
            # identity and integration run in different processes here, so the exporter
            # client's secret is handed to both through the environment (DESIGN §6).
            secret_file.write_text(secrets.token_urlsafe(32))
            secret_file.chmod(0o600)
        env.update(
            {
                "MERCATO_DATABASE_URL": self.config.database_url,
                "MERCATO_REDIS_URL": self.config.redis_url,
                "MERCATO_BROKER_URL": self.config.broker_url,
                "MERCATO_ISSUER": self.base_url,
                "MERCATO_IDENTITY_URL": self.base_url,
                "MERCATO_PUBLIC_URL": self.base_url,
                "MERCATO_DATA_DIR": str(self.workdir / "data"),
                "MERCATO_EXPORTER_CLIENT_SECRET": secret_file.read_text(),
                "MERCATO_LOG_JSON": "true",
                **dict(self.config.env),
            }
        )
        if self.config.partner_port:
            partner = f"http://127.0.0.1:{self.config.partner_port}"
            env.setdefault("MERCATO_EXTERNAL_BASE_URL", partner)
            env.setdefault("MERCATO_EXTERNAL_TOKEN_URL", f"{partner}/oauth/token")
            env.setdefault("MERCATO_EXTERNAL_CLIENT_ID", "partner-client")
            env.setdefault("MERCATO_EXTERNAL_CLIENT_SECRET", "partner-secret")
        return env

    def _mercato(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mercato.cli", *args]

    def start(self, timeout: float = 90.0) -> None:
        """Migrate, then start every process and wait until each answers."""
        migrate = subprocess.run(
            self._mercato("migrate"), env=self.env, capture_output=True, timeout=300
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"mercato migrate failed:\n{migrate.stderr.decode()[-4000:]}")
        upstreams: dict[str, list[str]] = {}
        for service in SERVICES:
            upstreams[service] = []
            for replica in range(1, self.config.replicas + 1):
                port = free_port()
                upstreams[service].append(f"127.0.0.1:{port}")
                self._add(
                    f"{service}-{replica}",
                    self._mercato("serve", service, "--port", str(port)),
                    port,
                )
        self._add("worker", self._mercato("worker"), None)
        if self.config.partner_port:
            self._add(
                "partner",
                self._mercato("partner", "--port", str(self.config.partner_port)),
                self.config.partner_port,
            )
        self._write_nginx(upstreams)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self._add(
            "nginx",
            [nginx, "-p", str(self.workdir), "-c", "nginx.conf", "-g", "daemon off;"],
            self.config.port,
        )
        for child in self.children.values():
            self._spawn(child)
        self.wait_healthy(timeout)

    def _add(self, name: str, args: list[str], port: int | None) -> None:
        self.children[name] = Child(name, args, port)

    def _write_nginx(self, upstreams: dict[str, list[str]]) -> None:
        (self.workdir / "tmp").mkdir(exist_ok=True)
        (self.workdir / "nginx.conf").write_text(
            render_nginx(upstreams, listen=f"127.0.0.1:{self.config.port}")
        )

    def _spawn(self, child: Child) -> None:
        log = (self.logs / f"{child.name}.log").open("ab")
        child.process = subprocess.Popen(
            child.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        log.close()

    def wait_healthy(self, timeout: float = 90.0) -> None:
        """Wait until every HTTP child answers `/health` and the worker is alive."""
        deadline = time.monotonic() + timeout
        pending = {c.name for c in self.children.values() if c.port is not None}
        while pending:
            for name in sorted(pending):
                child = self.children[name]
                assert child.process is not None
                if child.process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {child.process.returncode}:\n{self.log_tail(name)}"
                    )
                path = "/_stats" if name == "partner" else "/health"
                try:
                    if httpx.get(f"http://127.0.0.1:{child.port}{path}", timeout=1).is_success:
                        pending.discard(name)
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not healthy in time: {sorted(pending)}")
            time.sleep(0.2)
        worker = self.children["worker"].process
        assert worker is not None
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited:\n{self.log_tail('worker')}")

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The end of one child's log."""
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to one child and wait for it to exit."""
        process = self.children[name].process
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            process.wait(timeout=30)

    def restart(self, name: str) -> None:
        """Start one (stopped) child again."""
        child = self.children[name]
        if child.process is not None and child.process.poll() is None:
            self.kill(name, signal.SIGTERM)
        self._spawn(child)

    def stop(self) -> None:
        """SIGTERM every child (nginx last), then SIGKILL what is left after 15 s."""
        order = [n for n in self.children if n != "nginx"] + (
            ["nginx"] if "nginx" in self.children else []
        )
        for name in order:
            process = self.children[name].process
            if process is not None and process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 15
        for name in order:
            process = self.children[name].process
            if process is None:
                continue
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def ensure_pg_database(admin_url: str, name: str) -> str:
    """Create database `name` if missing; answer its SQLAlchemy URL (asyncpg driver)."""
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"
