"""The platform started as a user starts it: `mercato run` in a subprocess, driven over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mercato.devcluster import ReservedPort


@dataclass
class RunningPlatform:
    """A `mercato run` process and where to reach it."""

    base_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    reserved: ReservedPort | None = None

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
    reserved: ReservedPort | None = None,
) -> RunningPlatform:
    """Start `mercato run` and wait until `/health` answers.

    Without `port`, on a socket bound here and handed over (`--fd`): no other process can take
    the port between choosing it and listening (`reserved`: the port of an earlier start, to
    restart where it ran). Its URL is the issuer and public URL unless `extra_env` says
    otherwise.
    """
    if reserved is None and port is None:
        reserved = ReservedPort()
    sock = reserved.socket(listening=False) if reserved is not None else None
    bound = port if reserved is None else reserved.port
    url = f"http://127.0.0.1:{bound}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
    env.update({"MERCATO_LOG_JSON": "true", **(extra_env or {})})
    if sock is not None:
        env.setdefault("MERCATO_PUBLIC_URL", url)
        env.setdefault("MERCATO_ISSUER", url)
    where = ["--port", str(port)] if sock is None else ["--fd", str(sock.fileno())]
    log_path = data_dir.parent / f"mercato-{bound}.log"
    try:
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "mercato.cli", "run", *where,
                 "--data-dir", str(data_dir), *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=data_dir.parent,
                pass_fds=() if sock is None else (sock.fileno(),),
            )  # fmt: skip
    finally:
        if sock is not None:
            sock.close()  # the child's now; the holder keeps the port until the test ends
    running = RunningPlatform(url, data_dir, process, log_path, reserved)
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


def stop_platform(running: RunningPlatform, *, keep_port: bool = False) -> None:
    """SIGTERM and wait (SIGKILL after 20 s)."""
    running.process.terminate()
    try:
        running.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()
    if running.reserved is not None and not keep_port:
        running.reserved.close()


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
