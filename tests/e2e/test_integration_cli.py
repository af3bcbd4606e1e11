"""The integration commands as a user runs them: `mercato partner`, `mercato jobs ...`,
`mercato integration token-status`, and `mercato run --demo`, each a real process."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mercato.devcluster import ReservedPort
from tests.e2e.conftest import RunningPlatform, start_platform, stop_platform
from tests.running import Processes, start_partner


def mercato(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one `mercato` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "mercato.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def partner_url(tmp_path: Path) -> Iterator[str]:
    """`mercato partner --token-budget 2` (retried on another port if its bind lost a race)."""
    children = Processes(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
    try:
        yield start_partner(children, env, "--token-budget", "2")
    finally:
        children.close()


def test_jobs_and_token_status_commands_against_the_partner(
    partner_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
    env |= {
        "MERCATO_DATA_DIR": str(tmp_path / "data"),
        "MERCATO_EXTERNAL_BASE_URL": partner_url,
        "MERCATO_EXTERNAL_CLIENT_ID": "partner-client",
        "MERCATO_EXTERNAL_CLIENT_SECRET": "partner-secret",
        "MERCATO_EXTERNAL_TOKEN_BUDGET_PER_HOUR": "2",
        "MERCATO_LOG_LEVEL": "WARNING",
        "COLUMNS": "200",
    }
    first = mercato("jobs", "run", "sync-external-orders", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "succeeded created=20" in first.stdout
    # A second process: the token cached by the first one (in the SQLite store) is reused.
    second = mercato("jobs", "run", "sync-external-orders", env=env, cwd=tmp_path)
    assert "succeeded created=0 updated=0 unchanged=20" in second.stdout, second.stdout
    assert httpx.get(f"{partner_url}/_stats").json()["tokens_issued"] == 1

    status = mercato("integration", "token-status", env=env, cwd=tmp_path)
    assert status.returncode == 0
    assert "partner" in status.stdout and "cached" in status.stdout and "1/2" in status.stdout
    assert "partner-secret" not in status.stdout + status.stderr

    runs = mercato("jobs", "runs", "sync-external-orders", env=env, cwd=tmp_path)
    assert runs.stdout.count("succeeded") == 2 and "2 of 2 runs" in runs.stdout
    listing = mercato("jobs", "list", env=env, cwd=tmp_path)
    assert "sync-external-orders" in listing.stdout and "enabled" in listing.stdout
    assert "disabled: no credentials for the mercato-exporter" in listing.stdout

    unknown = mercato("jobs", "run", "nope", env=env, cwd=tmp_path)
    assert unknown.returncode != 0 and "no job 'nope'" in unknown.stdout + unknown.stderr
    disabled = mercato("jobs", "run", "export-products", env=env, cwd=tmp_path)
    assert disabled.returncode != 0 and "disabled" in disabled.stdout + disabled.stderr


def start_demo(data_dir: Path) -> tuple[RunningPlatform, int]:
    """`mercato run --demo` with its in-process sandbox on a chosen port, chosen again if
    another process took it before the sandbox bound it."""
    for _ in range(5):
        holder = ReservedPort()
        partner_port = holder.port
        holder.close()
        try:
            running = start_platform(
                data_dir, args=("--demo",), extra_env={"MERCATO_PARTNER_PORT": str(partner_port)}
            )
        except AssertionError as exc:
            if "address already in use" in str(exc).lower():
                continue
            raise
        return running, partner_port
    raise AssertionError("no free port for the demo's sandbox in 5 tries")


def test_run_demo_starts_the_partner_and_the_syncs_use_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    running, partner_port = start_demo(data_dir)
    try:
        stats = httpx.get(f"http://127.0.0.1:{partner_port}/_stats", timeout=5).json()
        assert "tokens_issued" in stats
        deadline = time.monotonic() + 60
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline and len(statuses) < 2:
            with sqlite3.connect(data_dir / "integration.db") as db:
                rows = db.execute(
                    "select job, status from job_runs where status in ('succeeded', 'failed')"
                ).fetchall()
            statuses = dict(rows)
            time.sleep(0.5)
        assert statuses == {
            "sync-external-products": "succeeded",
            "sync-external-orders": "succeeded",
        }, running.log()[-3000:]
    finally:
        stop_platform(running)
