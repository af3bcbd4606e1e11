"""A distributed Mercato on this machine, without containers (`mercato dev-cluster`).

Starts, as child processes: the migrations, `mercato serve SERVICE` for every service and
replica, the gateway's companion (`mercato serve gateway`: the whole OpenAPI document, docs and
readiness), one `mercato worker`, optionally the partner sandbox, and nginx in front with the
gateway configuration of `mercato.gateway`. PostgreSQL, Redis and RabbitMQ must be running;
with `broker="kafka"` the cluster starts a Tansu of its own (a Kafka-compatible broker, from the
`dev` extra) instead of using RabbitMQ.
Tests use `DevCluster` directly so they can kill and restart single processes.

Ports are never probed and released for a child to bind later (another process could take the
port in between): this process binds each server's socket and hands it over, to `mercato serve`
as `--fd N` and to nginx through its `NGINX` inherited-sockets variable. The partner sandbox
binds its own port, and is started again on another one if it lost a port picked here.
"""

from __future__ import annotations

import errno
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
from typing import Literal

import httpx

from mercato.gateway import GATEWAY, ROUTES, UPSTREAMS_ENV, render_nginx, services_upstreams_json
from mercato.platform.secrets import generate_key
from mercato.tansu import Tansu

SERVICES = tuple(ROUTES)
HOST = "127.0.0.1"
# nginx connects to the replicas from this loopback address, the one proxy they trust: tests
# and tools reach replicas directly from HOST, and what they say in X-Forwarded-For is ignored.
PROXY_SOURCE = "127.0.0.2"


def free_port() -> int:
    """A TCP port nobody listens on right now (only right now: prefer `ClusterConfig` ports
    of 0, which the cluster binds itself and hands over)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ReservedPort:
    """A localhost port this process holds for as long as the cluster lives.

    The holder is bound and never listens, with SO_REUSEPORT but not SO_REUSEADDR: only a
    socket of this user that also asks for SO_REUSEPORT can share the port, and no outgoing
    connection picks it. Each start of a child gets a new socket on the port, made here; while
    no child listens on it, connections are refused, as from a server that is down.
    """

    def __init__(self, port: int = 0) -> None:
        if port:
            # The kernel never hands out a port in use for port 0, but an explicit one could
            # be another cluster's, shared through SO_REUSEPORT: bind it as a plain server
            # would first, which anyone holding or serving it refuses.
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((HOST, port))
        try:
            self._holder = _holder(port, reuse_address=False)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or port == 0:
                raise
            # Connections of an earlier server in TIME_WAIT keep an explicit port from a
            # holder without SO_REUSEADDR (the probe above found no live one).
            self._holder = _holder(port, reuse_address=True)
        self.port = int(self._holder.getsockname()[1])

    def socket(self, *, listening: bool) -> socket.socket:
        """A new socket bound to the port, for one child (listening already if asked)."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((HOST, self.port))
        if listening:
            sock.listen(511)
        return sock

    def close(self) -> None:
        """Give the port back."""
        self._holder.close()


@dataclass
class ClusterConfig:
    """What to start and against which backing services."""

    workdir: Path
    database_url: str
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # "kafka": a Tansu of the cluster's own carries the events, and `broker_url` is unused.
    broker: Literal["rabbitmq", "kafka"] = "rabbitmq"
    # The gateway's port; 0: any free one (see `DevCluster.base_url`).
    port: int = 8080
    replicas: int = 2
    # The partner sandbox's port; 0: any free one; None: no sandbox.
    partner_port: int | None = None
    # Extra MERCATO_* variables for every process (isolation prefixes in tests, schedules...).
    env: Mapping[str, str] = field(default_factory=dict)
    # Replicas of the gateway's companion (`mercato serve gateway`).
    gateway_replicas: int = 1


@dataclass
class Child:
    """One child process and how to start it again."""

    name: str
    args: list[str]
    port: int | None
    process: subprocess.Popen[bytes] | None = None
    # How the child gets its listening socket: `--fd N` (mercato serve), the NGINX variable.
    handover: Literal["fd", "nginx"] | None = None
    env: dict[str, str] = field(default_factory=dict)  # on top of the cluster's
    probe: str = "/health"  # answers 2xx once the child is up


class DevCluster:
    """Owns the child processes of one cluster."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.workdir = config.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs = self.workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        # Held from here on: the base URL is in every process's environment (issuer...).
        self._ports: dict[str, ReservedPort] = {"nginx": ReservedPort(config.port)}
        self.port = self._ports["nginx"].port
        self.base_url = f"http://{HOST}:{self.port}"
        self.children: dict[str, Child] = {}
        self.env = self._environment()
        self.kafka: Tansu | None = None

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
        secret_file = self.workdir / "exporter-secret"
        if not secret_file.exists():
            # identity and integration run in different processes here, so the exporter
            # client's secret is handed to both through the environment (DESIGN §6).
            secret_file.write_text(secrets.token_urlsafe(32))
            secret_file.chmod(0o600)
        key_file = self.workdir / "secrets-key"
        if not key_file.exists():
            # The key-encryption key of secrets at rest, shared by every process (it must be:
            # a replica cannot open what another sealed with a key of its own).
            key_file.write_text(generate_key())
            key_file.chmod(0o600)
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
                "MERCATO_SECRETS_KEY": key_file.read_text(),
                "MERCATO_LOG_JSON": "true",
                "MERCATO_TRUSTED_PROXIES": f"{PROXY_SOURCE}/32",
                **dict(self.config.env),
            }
        )
        return env

    def _mercato(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mercato.cli", *args]

    def start(self, timeout: float = 90.0) -> None:
        """Migrate, then start every process and wait until each answers and every service
        is ready behind the gateway."""
        deadline = time.monotonic() + timeout
        if self.config.broker == "kafka" and self.kafka is None:
            self.kafka = Tansu(self.logs / "tansu")
            self.kafka.start()
            self.env["MERCATO_BROKER_URL"] = self.kafka.url
        migrate = subprocess.Popen(
            self._mercato("migrate"), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            # Meanwhile: the sandbox's address goes into the services' environment.
            self._start_partner(deadline)
            _, stderr = migrate.communicate(timeout=300)
        finally:
            if migrate.poll() is None:
                migrate.kill()
                migrate.wait()
        if migrate.returncode != 0:
            raise RuntimeError(f"mercato migrate failed:\n{stderr.decode()[-4000:]}")
        upstreams: dict[str, list[str]] = {}
        for service in SERVICES:
            upstreams[service] = []
            for replica in range(1, self.config.replicas + 1):
                name = f"{service}-{replica}"
                port = self._reserve(name)
                upstreams[service].append(f"{HOST}:{port}")
                self._add(Child(name, self._mercato("serve", service), port, handover="fd"))
        upstreams[GATEWAY] = []
        companion_env = {UPSTREAMS_ENV: services_upstreams_json(upstreams)}
        for replica in range(1, self.config.gateway_replicas + 1):
            name = f"{GATEWAY}-{replica}"
            port = self._reserve(name)
            upstreams[GATEWAY].append(f"{HOST}:{port}")
            args = self._mercato("serve", GATEWAY)
            self._add(Child(name, args, port, handover="fd", env=companion_env))
        # The worker serves its own /metrics (its consumers', relays' and jobs' counters); it
        # answers once the worker has started, so it is probed like the replicas' /health.
        # (A port picked now, not handed over: the worker's metrics server binds it itself.)
        metrics_port = free_port()
        worker = self._mercato("worker", "--metrics-port", str(metrics_port))
        self._add(Child("worker", worker, metrics_port, probe="/metrics"))
        self._write_nginx(upstreams)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        args = [nginx, "-p", str(self.workdir), "-c", "nginx.conf", "-g", "daemon off;"]
        self._add(Child("nginx", args, self.port, handover="nginx"))
        for child in self.children.values():
            if child.process is None:
                self._spawn(child)
        self.wait_healthy(max(1.0, deadline - time.monotonic()))

    def _reserve(self, name: str) -> int:
        if name not in self._ports:
            self._ports[name] = ReservedPort()
        return self._ports[name].port

    def _start_partner(self, deadline: float) -> None:
        wanted = self.config.partner_port
        if wanted is None:
            return
        for _ in range(5):
            port = wanted or free_port()
            child = Child(
                "partner", self._mercato("partner", "--port", str(port)), port, probe="/_stats"
            )
            self._add(child)
            log = self.logs / "partner.log"
            seen = log.stat().st_size if log.exists() else 0
            self._spawn(child)
            try:
                self._wait_up([child], deadline)
                break
            except RuntimeError:
                lost = "address already in use" in _read_from(log, seen).lower()
                if wanted or not lost:
                    raise
                # Taken between free_port() and the sandbox's own bind: try another port.
        partner = f"http://{HOST}:{self.children['partner'].port}"
        self.env.setdefault("MERCATO_EXTERNAL_BASE_URL", partner)
        self.env.setdefault("MERCATO_EXTERNAL_TOKEN_URL", f"{partner}/oauth/token")
        self.env.setdefault("MERCATO_EXTERNAL_CLIENT_ID", "partner-client")
        self.env.setdefault("MERCATO_EXTERNAL_CLIENT_SECRET", "partner-secret")

    def _add(self, child: Child) -> None:
        self.children[child.name] = child

    def _write_nginx(self, upstreams: dict[str, list[str]]) -> None:
        (self.workdir / "tmp").mkdir(exist_ok=True)
        (self.workdir / "nginx.conf").write_text(
            render_nginx(upstreams, listen=f"{HOST}:{self.port}", source_address=PROXY_SOURCE)
        )

    def _spawn(self, child: Child) -> None:
        env = {**self.env, **child.env}
        args = list(child.args)
        sock: socket.socket | None = None
        if child.handover is not None:
            # nginx does not listen on an inherited socket itself; uvicorn listens once its
            # app has started, so a replica refuses connections until it can answer them.
            sock = self._ports[child.name].socket(listening=child.handover == "nginx")
            if child.handover == "fd":
                args += ["--fd", str(sock.fileno())]
            else:
                env["NGINX"] = f"{sock.fileno()};"
        log = (self.logs / f"{child.name}.log").open("ab")
        try:
            child.process = subprocess.Popen(
                args,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                pass_fds=() if sock is None else (sock.fileno(),),
            )
        finally:
            log.close()
            if sock is not None:
                sock.close()  # the child's now; the port stays held by the ReservedPort

    def replica_urls(self, service: str) -> list[str]:
        """Direct base URLs of `service`'s replicas (or of the companion's, `gateway`)."""
        prefix = f"{service}-"
        urls = [
            f"http://{HOST}:{child.port}"
            for name, child in self.children.items()
            if name.startswith(prefix) and name[len(prefix) :].isdigit() and child.port
        ]
        if not urls:
            raise KeyError(f"no replicas of {service!r} in this cluster")
        return urls

    @property
    def worker_metrics_url(self) -> str:
        """Where the worker serves its `/metrics` (`mercato worker --metrics-port`)."""
        return f"http://{HOST}:{self.children['worker'].port}"

    def wait_healthy(self, timeout: float = 90.0) -> None:
        """Wait until every HTTP child answers, the worker is alive and the gateway's `/ready`
        says every service has a ready replica."""
        deadline = time.monotonic() + timeout
        self._wait_up([c for c in self.children.values() if c.port is not None], deadline)
        worker = self.children["worker"].process
        assert worker is not None
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited:\n{self.log_tail('worker')}")
        last = "no answer"
        while True:
            try:
                answer = httpx.get(f"{self.base_url}/ready", timeout=5)
                if answer.status_code == 200:
                    return
                last = answer.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway's /ready not ok in time: {last}")
            time.sleep(0.2)

    def _wait_up(self, children: list[Child], deadline: float) -> None:
        pending = {child.name for child in children}
        while pending:
            for name in sorted(pending):
                child = self.children[name]
                assert child.process is not None
                if child.process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {child.process.returncode}:\n{self.log_tail(name)}"
                    )
                try:
                    url = f"http://{HOST}:{child.port}{child.probe}"
                    if httpx.get(url, timeout=1).is_success:
                        pending.discard(name)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"not healthy in time: {sorted(pending)}")
            if pending:
                time.sleep(0.2)

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
        """Start one (stopped) child again, on the same port."""
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
        for reserved in self._ports.values():
            reserved.close()
        if self.kafka is not None:
            self.kafka.stop()  # after the processes that use it


def _holder(port: int, *, reuse_address: bool) -> socket.socket:
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse_address))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise
    return sock


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read().decode(errors="replace")


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
