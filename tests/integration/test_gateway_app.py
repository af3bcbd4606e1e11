"""The gateway's companion (`mercato serve gateway`) answers what the embedded process answers
about the whole installation: the same OpenAPI operations, docs, and a `/ready` over every
service that one client-side check reads the same way on both modes.

The replicas it asks are real servers: small HTTP servers answering `/ready` as a replica does,
ports that refuse, sockets that never answer, and real `mercato serve` processes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from mercato.app import create_service_app
from mercato.devcluster import ReservedPort
from mercato.gateway import ROUTES, UPSTREAMS_ENV
from mercato.gateway_app import create_gateway_app, embedded_document
from tests import services
from tests.harness import embedded_settings, stack

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# Each process answers these itself; the installation documents them once.
PER_PROCESS = ("/health", "/ready", "/metrics", "/openapi.json", "/docs", "/redoc")


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def all_ready(body: dict[str, Any]) -> bool:
    """The one client-side readiness check, for `mercato run` and for the gateway alike."""
    return body["status"] == "ok" and all(
        body["services"][service]["status"] == "ok" for service in ROUTES
    )


class Replica(ThreadingHTTPServer):
    """A real HTTP server answering `/ready` the way a replica does (status changeable)."""

    def __init__(self, service: str, status: int = 200) -> None:
        self.status = status
        self.service = service
        replica = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = replica.status == 200
                check = "ok" if ok else "unavailable: ConnectionError"
                body = json.dumps(
                    {
                        "status": "ok" if ok else "unavailable",
                        "checks": {f"database:{replica.service}": "ok", "broker": check},
                    }
                ).encode()
                self.send_response(replica.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def replicas() -> Iterator[dict[str, list[Replica]]]:
    """Two live replicas of every service."""
    made = {service: [Replica(service), Replica(service)] for service in ROUTES}
    yield made
    for pair in made.values():
        for replica in pair:
            replica.shutdown()
            replica.server_close()


def addresses(made: dict[str, list[Replica]]) -> dict[str, list[str]]:
    return {service: [r.address for r in pair] for service, pair in made.items()}


async def ready_of(app: Any) -> tuple[int, dict[str, Any], float]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        started = time.monotonic()
        answer = await client.get("/ready")
        return answer.status_code, answer.json(), time.monotonic() - started


# --- the document -----------------------------------------------------------------------------


async def test_the_document_has_the_operations_mercato_run_serves(data_dir: Path) -> None:
    settings = embedded_settings(data_dir)
    gateway = create_gateway_app({}, document=partial(embedded_document, settings))
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        served = await client.get("/openapi.json")
        again = await client.get("/openapi.json")
        pages = {path: await client.get(path) for path in ("/docs", "/redoc")}
        redirect = await client.get("/docs/oauth2-redirect")
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    assert again.content == served.content  # built once, then the cached bytes
    async with stack(embedded_settings(data_dir / "run")) as s:
        embedded = (await s.client.get("/openapi.json")).json()
    document = served.json()
    assert operations(document) == operations(embedded)
    assert len(operations(document)) > 40
    assert document["info"]["title"] == embedded["info"]["title"] == "Mercato"
    for path, page in pages.items():
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/openapi.json" in page.text, path
    assert "swagger-ui" in pages["/docs"].text and "redoc" in pages["/redoc"].text
    assert "/docs/oauth2-redirect" in pages["/docs"].text
    assert redirect.status_code == 200 and "oauth2" in redirect.text.lower()


def test_every_operation_is_served_by_one_service_as_the_gateway_routes_it(
    tmp_path: Path,
) -> None:
    """The one document promises no operation that no replica serves, and hides none."""
    settings = embedded_settings(
        tmp_path, redis_url="redis://127.0.0.1:9/0", secrets_key=Fernet.generate_key().decode()
    )
    served: set[tuple[str, str]] = set()
    for service in ROUTES:
        served |= operations(create_service_app(service, settings).openapi())
    documented = operations(embedded_document(embedded_settings(tmp_path)))

    def shared(operation: tuple[str, str]) -> bool:
        return operation[0].startswith(PER_PROCESS)

    assert {op for op in served if not shared(op)} == {op for op in documented if not shared(op)}


def test_building_the_document_connects_to_nothing(tmp_path: Path) -> None:
    """Built as the companion builds it (settings from the environment, pointing at a real
    PostgreSQL, Redis and RabbitMQ): not one connection is opened."""
    program = """
import asyncio, json, sys
connects = []

def record(event, args):
    if event == "socket.connect":
        connects.append(repr(args))

sys.addaudithook(record)
import httpx
from mercato.gateway_app import create_gateway_app

async def main():
    app = create_gateway_app({})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        answer = await client.get("/openapi.json")
    print(json.dumps({"status": answer.status_code, "paths": len(answer.json()["paths"]),
                      "connects": connects}))

asyncio.run(main())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
    env.update(
        {
            "MERCATO_DATA_DIR": str(tmp_path / "data"),
            "MERCATO_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
            "MERCATO_REDIS_URL": services.REDIS_URL,
            "MERCATO_BROKER_URL": f"amqp://guest:guest@{services.RABBIT_HOST}:5672/",
        }
    )
    ran = subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ran.returncode == 0, ran.stderr[-4000:]
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["status"] == 200 and result["paths"] > 30
    assert result["connects"] == []


# --- /ready -----------------------------------------------------------------------------------


async def test_ready_is_200_when_every_service_has_ready_replicas(
    replicas: dict[str, list[Replica]],
) -> None:
    status, body, _ = await ready_of(create_gateway_app(addresses(replicas), ready_timeout=5))
    assert status == 200, body
    assert all_ready(body)
    for service, pair in replicas.items():
        assert body["services"][service] == {
            "status": "ok",
            "replicas": {r.address: "ok" for r in pair},
        }


async def test_ready_is_503_naming_the_service_without_a_ready_replica(
    replicas: dict[str, list[Replica]],
) -> None:
    refusing = ReservedPort()  # bound, never listening: connections are refused
    try:
        upstreams = addresses(replicas)
        replicas["wallet"][0].status = 503  # its broker is down
        upstreams["wallet"][1] = f"127.0.0.1:{refusing.port}"  # and the other one is dead
        replicas["orders"][0].status = 503  # orders keeps one ready replica
        status, body, _ = await ready_of(create_gateway_app(upstreams, ready_timeout=5))
    finally:
        refusing.close()
    assert status == 503, body
    assert not all_ready(body)
    assert body["status"] == "unavailable"
    wallet = body["services"]["wallet"]
    assert wallet["status"] == "unavailable"
    assert wallet["replicas"] == {
        replicas["wallet"][0].address: "unavailable: HTTP 503 (broker)",
        f"127.0.0.1:{refusing.port}": "unavailable: ConnectError",
    }
    assert body["services"]["orders"]["status"] == "ok"
    unavailable = {s for s, entry in body["services"].items() if entry["status"] != "ok"}
    assert unavailable == {"wallet"}


async def test_a_service_missing_from_the_config_is_not_ready(
    replicas: dict[str, list[Replica]],
) -> None:
    upstreams = addresses(replicas)
    del upstreams["integration"]
    status, body, _ = await ready_of(create_gateway_app(upstreams, ready_timeout=5))
    assert status == 503
    assert body["services"]["integration"] == {"status": "unavailable", "replicas": {}}


async def test_replicas_that_never_answer_are_asked_at_once_and_given_up_on() -> None:
    silent: list[socket.socket] = []
    try:
        upstreams: dict[str, list[str]] = {}
        for service in ROUTES:
            upstreams[service] = []
            for _ in range(2):
                # Listening, never accepting: the connection opens, no answer ever comes.
                sock = socket.socket()
                sock.bind(("127.0.0.1", 0))
                sock.listen(8)
                silent.append(sock)
                upstreams[service].append(f"127.0.0.1:{sock.getsockname()[1]}")
        status, body, took = await ready_of(create_gateway_app(upstreams, ready_timeout=0.5))
    finally:
        for sock in silent:
            sock.close()
    assert status == 503
    # Twelve replicas one after another would take 6 s.
    assert took < 3.0, took
    for entry in body["services"].values():
        assert set(entry["replicas"].values()) == {"unavailable: no answer within 0.5 s"}


async def test_embedded_ready_names_every_service_from_its_own_checks(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir)) as s:
        answer = await s.client.get("/ready")
    assert answer.status_code == 200
    body = answer.json()
    assert all_ready(body)
    assert set(body["checks"]) == {f"database:{service}" for service in ROUTES}
    for service in ROUTES:
        assert body["services"][service] == {
            "status": "ok",
            "checks": {f"database:{service}": "ok"},
        }


async def test_a_replica_with_redis_down_says_which_check_failed(
    data_dir: Path,
) -> None:
    down = ReservedPort()  # a Redis that refuses connections
    try:
        settings = embedded_settings(
            data_dir,
            redis_url=f"redis://127.0.0.1:{down.port}/0",
            secrets_key=Fernet.generate_key().decode(),
        )
        app = create_service_app("wallet", settings)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://wallet.test"
        ) as client:
            # The lifespan is not run: the database check still answers, Redis cannot.
            answer = await client.get("/ready")
    finally:
        down.close()
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "unavailable" and not all_ready(body)
    wallet = body["services"]["wallet"]
    assert wallet["status"] == "unavailable"
    assert wallet["checks"]["database:wallet"] == "ok"
    assert wallet["checks"]["redis"].startswith("unavailable: ")


# --- real processes ---------------------------------------------------------------------------


def _serve(
    args: list[str], env: dict[str, str], log: Path, reserved: ReservedPort
) -> subprocess.Popen[bytes]:
    """`mercato serve ...` on a socket bound here and handed over (`--fd`), as the dev cluster
    starts it; answers once its `/health` does."""
    sock = reserved.socket(listening=False)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mercato.cli", "serve", *args, "--fd", str(sock.fileno())],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(sock.fileno(),),
            cwd=log.parent,
        )
    sock.close()
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, log.read_text()[-4000:]
        try:
            if httpx.get(f"http://127.0.0.1:{reserved.port}/health", timeout=2).is_success:
                return process
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-4000:]
        time.sleep(0.2)


def test_the_companion_process_over_a_real_replica(tmp_path: Path, redis_prefix: str) -> None:
    services.require("Redis", "127.0.0.1", 6379)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
    env.update(
        {
            "MERCATO_DATA_DIR": str(tmp_path / "data"),
            "MERCATO_REDIS_URL": services.REDIS_URL,
            "MERCATO_REDIS_PREFIX": redis_prefix,
            "MERCATO_ADMIN_PASSWORD": "Admin-Pass-1234",
            "MERCATO_LOG_JSON": "true",
            "MERCATO_SECRETS_KEY": Fernet.generate_key().decode(),
            "MERCATO_ISSUER": "http://gateway.test",
        }
    )
    migrate = subprocess.run(
        [sys.executable, "-m", "mercato.cli", "migrate", "accounts"],
        env=env,
        capture_output=True,
        timeout=240,
    )
    assert migrate.returncode == 0, migrate.stderr.decode()[-4000:]
    ports = [ReservedPort(), ReservedPort()]  # held to the end: a dead replica refuses
    processes: list[subprocess.Popen[bytes]] = []
    try:
        accounts_port, gateway_port = (reserved.port for reserved in ports)
        accounts = _serve(["accounts"], env, tmp_path / "accounts.log", ports[0])
        processes.append(accounts)
        live = {s: [f"127.0.0.1:{accounts_port}"] for s in ROUTES}
        gateway_env = {**env, UPSTREAMS_ENV: json.dumps(live), "MERCATO_GATEWAY_READY_TIMEOUT": "5"}
        processes.append(_serve(["gateway"], gateway_env, tmp_path / "gateway.log", ports[1]))
        url = f"http://127.0.0.1:{gateway_port}"
        # Every service "is" the accounts replica here: the gateway reads its real /ready.
        answer = httpx.get(f"{url}/ready", timeout=30)
        assert answer.status_code == 200, answer.text
        assert all_ready(answer.json())
        direct = httpx.get(f"http://127.0.0.1:{accounts_port}/ready", timeout=30).json()
        assert direct["services"]["accounts"] == {
            "status": "ok",
            "checks": {"database:accounts": "ok", "redis": "ok"},
        }
        accounts.kill()
        accounts.wait(timeout=30)
        answer = httpx.get(f"{url}/ready", timeout=30)
        assert answer.status_code == 503
        for entry in answer.json()["services"].values():
            assert entry == {
                "status": "unavailable",
                "replicas": {f"127.0.0.1:{accounts_port}": "unavailable: ConnectError"},
            }
        document = httpx.get(f"{url}/openapi.json", timeout=120)
        assert document.status_code == 200
        assert ("/api/v1/orders", "post") in operations(document.json())
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        for reserved in ports:
            reserved.close()


def test_the_companion_reads_its_upstreams_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mercato.gateway_app import GatewaySettings

    monkeypatch.setenv(UPSTREAMS_ENV, json.dumps({"catalog": ["127.0.0.1:1", "127.0.0.1:2"]}))
    monkeypatch.setenv("MERCATO_GATEWAY_READY_TIMEOUT", "0.25")
    settings = GatewaySettings()
    assert settings.upstreams == {"catalog": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert settings.ready_timeout == 0.25
