"""The platform started as a user starts it: `mercato run` in a subprocess, driven over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningPlatform:
    """A `mercato run` process and where to reach it."""

    base_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self, **kwargs: object) -> httpx.Client:
        """An HTTP client on the platform's base URL."""
        return httpx.Client(base_url=self.base_url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        """What the process wrote so far."""
        return self.log_path.read_text(errors="replace")


def start_platform(
    data_dir: Path,
    *,
    extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    port: int | None = None,
) -> RunningPlatform:
    """Start `mercato run` on a free port (or `port`) and wait until `/health` answers."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
    env.update({"MERCATO_LOG_JSON": "true", **(extra_env or {})})
    log_path = data_dir.parent / f"mercato-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mercato.cli",
                "run",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                *args,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=data_dir.parent,
        )
    running = RunningPlatform(f"http://127.0.0.1:{port}", data_dir, process, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mercato run exited with {process.returncode}:\n{running.log()}")
        try:
            if httpx.get(f"{running.base_url}/health", timeout=1).status_code == 200:
                return running
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"mercato run did not answer /health in time:\n{running.log()}")


def stop_platform(running: RunningPlatform) -> None:
    """SIGTERM and wait (SIGKILL after 20 s)."""
    running.process.terminate()
    try:
        running.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()


def until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll until `check` answers something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout} s")


def login(client: httpx.Client, username: str, password: str) -> dict[str, str]:
    """Log in (retried until identity has applied the user's `user.created`)."""

    def attempt() -> dict[str, str] | None:
        answer = client.post(
            "/api/v1/auth/login", json={"username_or_email": username, "password": password}
        )
        if answer.status_code != 200:
            return None
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    result: dict[str, str] = until(attempt, f"login as {username}")
    return result


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[RunningPlatform]:
    """An embedded platform on an empty data dir."""
    data_dir = tmp_path / "data"
    running = start_platform(data_dir)
    yield running
    stop_platform(running)
