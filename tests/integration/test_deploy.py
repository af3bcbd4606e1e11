"""The deployment files stay true: the gateway config is rendered from the route table, nginx
accepts it and routes each path where the table says, and the compose file is valid and starts
the gateway's companion with the same upstreams."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.fernet import Fernet

from mercato.devcluster import ReservedPort
from mercato.gateway import (
    GATEWAY,
    GATEWAY_PATHS,
    ROUTES,
    UPSTREAMS_ENV,
    compose_nginx_conf,
    compose_upstreams,
    owner_of,
    render_nginx,
    services_upstreams_json,
)
from mercato.platform.settings import Settings
from tests.running import start_nginx
from tests.services import IN_CI

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def need(tool: str) -> str:
    path = shutil.which(tool) or (
        f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None
    )
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is not installed (.ci/run installs it)")
        pytest.skip(f"{tool} is not installed")
    return path


def test_deploy_nginx_conf_is_rendered_from_the_route_table() -> None:
    assert (DEPLOY / "nginx.conf").read_text() == compose_nginx_conf(), (
        "regenerate: python -c 'from mercato.gateway import compose_nginx_conf; "
        'open("deploy/nginx.conf", "w").write(compose_nginx_conf())\''
    )


def test_nginx_accepts_the_gateway_config(tmp_path: Path) -> None:
    nginx = need("nginx")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "logs").mkdir()
    upstreams = {service: ["127.0.0.1:9", "127.0.0.1:10"] for service in (*ROUTES, GATEWAY)}
    (tmp_path / "nginx.conf").write_text(render_nginx(upstreams, listen="127.0.0.1:18999"))
    checked = subprocess.run(
        [nginx, "-t", "-q", "-p", str(tmp_path), "-c", "nginx.conf", "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr


def test_compose_file_is_valid() -> None:
    compose = need("docker-compose")
    env = {
        **os.environ,
        "MERCATO_ADMIN_PASSWORD": "x",
        "MERCATO_EXPORTER_CLIENT_SECRET": "y",
        "MERCATO_SECRETS_KEY": "z",
    }
    checked = subprocess.run(
        [compose, "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr


def test_the_companion_is_required_and_owns_exactly_its_paths() -> None:
    with pytest.raises(ValueError, match=GATEWAY):
        render_nginx({service: ["127.0.0.1:9"] for service in ROUTES})
    for path in GATEWAY_PATHS:
        assert owner_of(path) == GATEWAY
    # Only the exact paths: a service's own pages stay under /services/<name>/.
    assert owner_of("/docs/other") is None
    assert owner_of("/services/catalog/docs") is None
    assert owner_of("/api/v1/products") == "catalog"


def test_compose_starts_the_companion_with_every_service_as_upstream() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    companion = compose["services"]["gateway-app"]
    assert companion["command"][:2] == ["serve", GATEWAY]
    upstreams = json.loads(companion["environment"][UPSTREAMS_ENV])
    assert upstreams == json.loads(services_upstreams_json(compose_upstreams()))
    assert set(upstreams) == set(ROUTES)
    assert "gateway-app" in compose["services"]["gateway"]["depends_on"]
    host, _, port = compose_upstreams()[GATEWAY][0].partition(":")
    assert host == "gateway-app" and port in " ".join(companion["command"])


class _Named(ThreadingHTTPServer):
    """A real HTTP server that answers every GET with its name and the path it got."""

    def __init__(self, name: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"server": name, "path": self.path}).encode()
                self.send_response(200)
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
def routed_nginx(tmp_path: Path) -> Iterator[str]:
    """nginx on the rendered config, on a socket bound here and handed over as the dev
    cluster does, in front of one named server per upstream; yields its base URL."""
    nginx = need("nginx")
    servers = {name: _Named(name) for name in (*ROUTES, GATEWAY)}
    (tmp_path / "logs").mkdir()
    reserved = ReservedPort()
    conf = render_nginx(
        {name: [server.address] for name, server in servers.items()},
        listen=f"127.0.0.1:{reserved.port}",
    )
    process = start_nginx(nginx, tmp_path, conf, reserved)
    base = f"http://127.0.0.1:{reserved.port}"
    try:
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/health", timeout=5).status_code != 200:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        for server in servers.values():
            server.shutdown()
            server.server_close()
        reserved.close()
        assert "using inherited sockets" in (tmp_path / "nginx.log").read_text()


def test_nginx_sends_the_companion_its_exact_paths_and_services_theirs(
    routed_nginx: str,
) -> None:
    def reached(path: str) -> object:
        answer = httpx.get(f"{routed_nginx}{path}", timeout=10)
        return answer.json().get("server", answer.status_code)

    for path in GATEWAY_PATHS:
        assert reached(path) == GATEWAY, path
    assert reached("/console/pages/orders.js") == GATEWAY  # the console's files (a prefix)
    # /health stays nginx's own answer; a service's own docs and metrics stay reachable.
    assert httpx.get(f"{routed_nginx}/health", timeout=10).json() == {"status": "ok"}
    answer = httpx.get(f"{routed_nginx}/services/catalog/docs", timeout=10).json()
    assert answer == {"server": "catalog", "path": "/docs"}
    assert reached("/services/identity/metrics") == "identity"
    assert reached("/services/identity/ready") == "identity"
    assert reached("/api/v1/products?q=x") == "catalog"
    assert reached("/api/v1/events/wallet/stats") == "wallet"
    # Exact means exact: nothing else under /docs goes to the companion.
    assert reached("/docs/other") == 404
    assert reached("/openapi.json.bak") == 404


def test_a_reserved_port_is_held_and_refuses_while_no_child_listens() -> None:
    reserved = ReservedPort()
    try:
        intruder = socket.socket()
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with intruder, pytest.raises(OSError):
            intruder.bind(("127.0.0.1", reserved.port))
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", reserved.port), timeout=5).close()
        for _ in range(2):  # a child's socket, then its restart's
            with reserved.socket(listening=True) as child:
                socket.create_connection(("127.0.0.1", reserved.port), timeout=5).close()
                child.accept()[0].close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", reserved.port), timeout=5).close()
    finally:
        reserved.close()


@pytest.mark.parametrize("service", list(ROUTES))
def test_the_gateway_sends_every_route_of_a_service_to_that_service(
    service: str, tmp_path: Path
) -> None:
    from mercato.app import create_service_app

    # Built, never started: the Redis a replica requires is not contacted.
    settings = Settings(
        data_dir=tmp_path,
        redis_url="redis://127.0.0.1:9/0",
        secrets_key=Fernet.generate_key().decode(),
        issuer="http://gateway.test",
    )
    app = create_service_app(service, settings)
    shared = (
        "/health",
        "/ready",
        "/metrics",
        "/docs",
        "/redoc",
        "/openapi.json",
        "/api/v1/events/",
    )
    paths = {path for path in app.openapi()["paths"] if not path.startswith(shared)}
    assert paths, f"{service} serves no routes"
    misrouted = {path: owner_of(path) for path in paths if owner_of(path) != service}
    assert misrouted == {}
