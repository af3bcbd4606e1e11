"""The deployment files stay true: the gateway config is rendered from the route table, nginx
accepts it, and the compose file is valid."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mercato.gateway import ROUTES, compose_nginx_conf, owner_of, render_nginx
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
    upstreams = {service: ["127.0.0.1:9", "127.0.0.1:10"] for service in ROUTES}
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
    }
    checked = subprocess.run(
        [compose, "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("service", list(ROUTES))
def test_the_gateway_sends_every_route_of_a_service_to_that_service(service: str) -> None:
    from mercato.app import create_service_app

    app = create_service_app(service)
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
