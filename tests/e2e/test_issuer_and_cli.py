"""Where `mercato run` listens is what it says it is, and the CLI finds it there.

Each test starts real processes, as a user does: the issuer in discovery, the banner and every
token's `iss` follow `--port` (and a socket handed over with `--fd`), CLI commands on the same data
dir ask that process over HTTP, and a bad setting or a bad command is one line on stderr.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from mercato.devcluster import ReservedPort
from tests.running import Processes, mercato, stop, wait_for


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any MERCATO_ variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
    return {**env, "MERCATO_LOG_LEVEL": "WARNING", "COLUMNS": "200", **extra}


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """One `mercato` command, run to completion."""
    return subprocess.run(
        mercato(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=180
    )


def admin_token(base_url: str, data_dir: Path) -> str:
    """An access token of the generated bootstrap admin."""
    fields = dict(
        line.split(": ", 1)
        for line in (data_dir / "admin-credentials.txt").read_text().splitlines()
        if ": " in line
    )
    answer = httpx.post(
        f"{base_url}/api/v1/auth/login",
        json={"username_or_email": fields["username"], "password": fields["password"]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def banner_issuer(log: str) -> str:
    """The issuer the banner printed."""
    found = re.search(r"^\s*issuer\s+(\S+)\s*$", log, re.M)
    assert found, log[:2000]
    return found.group(1)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr (asserting it is one, no traceback)."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def start_on_port(
    workdir: Path, data_dir: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`mercato run --port P` on a port nobody listens on; retried on another port when the
    bind lost a race with another process."""
    for attempt in range(5):
        holder = ReservedPort()
        port = holder.port
        holder.close()
        log = workdir / f"run-{attempt}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                mercato("run", "--port", str(port), "--data-dir", str(data_dir)),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        try:
            wait_for(f"http://127.0.0.1:{port}/health", process, log, 120)
        except RuntimeError:
            stop(process)
            if "address already in use" in log.read_text(errors="replace").lower():
                continue
            raise
        return process, port, log
    raise RuntimeError("mercato run found no free port in 5 tries")


def test_issuer_banner_and_tokens_follow_the_port(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    process, port, log = start_on_port(tmp_path, data_dir, clean_env())
    try:
        expected = f"http://127.0.0.1:{port}"
        assert port != 8000
        discovery = httpx.get(f"{expected}/.well-known/openid-configuration", timeout=10).json()
        assert discovery["issuer"] == expected
        assert discovery["token_endpoint"] == f"{expected}/oauth/token"
        assert discovery["jwks_uri"].startswith(expected + "/")
        assert banner_issuer(log.read_text(errors="replace")) == expected
        claims = jwt.decode(admin_token(expected, data_dir), options={"verify_signature": False})
        assert claims["iss"] == expected
        record = json.loads((data_dir / "instance.json").read_text())
        assert record["url"] == expected and record["issuer"] == expected
        assert record["pid"] == process.pid
    finally:
        stop(process)
    assert process.returncode == 0 or process.returncode < 0, log.read_text(errors="replace")
    assert not (data_dir / "instance.json").exists()  # removed on a clean stop


def test_issuer_behind_a_proxy_is_the_configured_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    public = "https://shop.example.test"
    process, port, log = start_on_port(tmp_path, data_dir, clean_env(MERCATO_ISSUER=public))
    try:
        local = f"http://127.0.0.1:{port}"
        discovery = httpx.get(f"{local}/.well-known/openid-configuration", timeout=10).json()
        assert discovery["issuer"] == public
        assert discovery["token_endpoint"] == f"{public}/oauth/token"
        assert banner_issuer(log.read_text(errors="replace")) == public
        claims = jwt.decode(admin_token(local, data_dir), options={"verify_signature": False})
        assert claims["iss"] == public
    finally:
        stop(process)


@pytest.fixture
def handed_over(tmp_path: Path) -> Iterator[tuple[str, Path, Processes]]:
    """`mercato run --fd N` on a socket this test bound; its instance knows of an external
    provider (with credentials) that a CLI process's own environment does not."""
    processes = Processes(tmp_path)
    data_dir = tmp_path / "data"
    env = clean_env(
        MERCATO_EXTERNAL_BASE_URL="http://127.0.0.1:9",
        MERCATO_EXTERNAL_CLIENT_ID="partner-client",
        MERCATO_EXTERNAL_CLIENT_SECRET="partner-secret",
        # Durations as people write them; the syncs stay quiet for the test's length.
        MERCATO_JOB_SYNC_EXTERNAL_PRODUCTS_INITIAL_DELAY="1h",
        MERCATO_JOB_SYNC_EXTERNAL_ORDERS_INITIAL_DELAY="1h",
        MERCATO_JOB_EXPORT_PRODUCTS_INITIAL_DELAY="30m",
    )
    try:
        # Not named "mercato": spawn would set MERCATO_ISSUER itself, and the issuer must come
        # from the socket.
        url = processes.spawn(
            "embedded", mercato("run", "--data-dir", str(data_dir)), env, "/health"
        )
        yield url, data_dir, processes
    finally:
        processes.close()


def test_an_inherited_socket_names_the_issuer_and_the_cli_reaches_it(
    handed_over: tuple[str, Path, Processes], tmp_path: Path
) -> None:
    url, data_dir, _ = handed_over
    discovery = httpx.get(f"{url}/.well-known/openid-configuration", timeout=10).json()
    assert discovery["issuer"] == url
    assert banner_issuer((tmp_path / "embedded.log").read_text(errors="replace")) == url
    claims = jwt.decode(admin_token(url, data_dir), options={"verify_signature": False})
    assert claims["iss"] == url
    record_path = data_dir / "instance.json"
    assert stat.S_IMODE(record_path.stat().st_mode) == 0o600
    assert json.loads(record_path.read_text())["url"] == url
    assert "partner-secret" not in record_path.read_text()

    # The CLI's environment knows no external provider: what it prints is the instance's view.
    env = clean_env()
    listing = cli("jobs", "list", "--data-dir", str(data_dir), env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    rows = {line.split()[1]: line for line in listing.stdout.splitlines() if "sync-" in line}
    assert "enabled" in rows["sync-external-products"], listing.stdout
    assert "enabled" in rows["sync-external-orders"], listing.stdout
    status = cli("integration", "token-status", "--data-dir", str(data_dir), env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "partner" in status.stdout and "identity" in status.stdout
    assert "partner-secret" not in status.stdout + status.stderr

    # The export reaches identity's token endpoint and catalog at the instance's own port.
    export = cli(
        "jobs", "run", "export-products", "--data-dir", str(data_dir), env=env, cwd=tmp_path
    )
    assert export.returncode == 0, export.stdout + export.stderr
    assert f"queued on {url}" in export.stdout
    assert "export-products: succeeded" in export.stdout
    exports = httpx.get(
        f"{url}/api/v1/exports",
        headers={"Authorization": f"Bearer {admin_token(url, data_dir)}"},
        timeout=10,
    ).json()
    assert exports["total"] == 1

    unknown = cli("jobs", "run", "nope", "--data-dir", str(data_dir), env=env, cwd=tmp_path)
    assert "nope" in one_line_error(unknown)


def test_a_bad_setting_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for variable, value in [
        ("MERCATO_JOB_SYNC_EXTERNAL_ORDERS_INITIAL_DELAY", "2x"),
        ("MERCATO_RELAY_POLL_SECONDS", "fast"),
        ("MERCATO_IDENTITY_PERSON_TOKEN_SECONDS", "forever"),
    ]:
        env = clean_env(**{variable: value})
        result = cli("run", "--port", "1", "--data-dir", str(data_dir), env=env, cwd=tmp_path)
        assert variable in one_line_error(result)
        assert not data_dir.exists(), sorted(p.name for p in data_dir.iterdir())
    accepted = clean_env(MERCATO_JOB_SYNC_EXTERNAL_ORDERS_INITIAL_DELAY="2s")
    listing = cli("jobs", "list", "--data-dir", str(data_dir), env=accepted, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr


def test_bad_commands_are_one_line(tmp_path: Path) -> None:
    env = clean_env()
    data_dir = tmp_path / "data"
    migrate = cli("migrate", "nope", "--data-dir", str(data_dir), env=env, cwd=tmp_path)
    assert "no service 'nope'" in one_line_error(migrate)
    assert not data_dir.exists()
    serve = cli("serve", "nope", env=env, cwd=tmp_path)
    assert "no service 'nope'" in one_line_error(serve)
    worker = cli("worker", "--services", "nope", env=env, cwd=tmp_path)
    assert "no service 'nope'" in one_line_error(worker)


def test_distributed_mode_without_an_issuer_refuses_to_start(tmp_path: Path) -> None:
    env = clean_env(
        MERCATO_REDIS_URL="redis://127.0.0.1:6379/0",
        MERCATO_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/nowhere",
    )
    for args in (("serve", "catalog", "--port", "1"), ("worker",)):
        line = one_line_error(cli(*args, env=env, cwd=tmp_path))
        assert "MERCATO_ISSUER" in line, line
