"""Mercato processes started as a user starts them, each on a port this process holds and hands
over (`--fd`), so no other process can take the port between choosing and listening. Shared by
the black-box suite's embedded target and `bench/cluster.py`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mercato.devcluster import ReservedPort


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll `url` until it answers 200; the child's log if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout} s:\n{log.read_text(errors='replace')}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def mercato(*args: str) -> list[str]:
    """The command line of a `mercato` subcommand in this interpreter."""
    return [sys.executable, "-m", "mercato.cli", *args]


@dataclass
class Processes:
    """Children started here, stopped together (last first)."""

    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[ReservedPort] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], env: dict[str, str], probe: str) -> str:
        """Start a child on a port this process holds and hands over (`--fd`)."""
        reserved = ReservedPort()
        self.ports.append(reserved)
        sock = reserved.socket(listening=False)
        url = f"http://127.0.0.1:{reserved.port}"
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [*args, "--fd", str(sock.fileno())],
                env={**env, "MERCATO_PUBLIC_URL": url, "MERCATO_ISSUER": url}
                if name == "mercato"
                else env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                pass_fds=(sock.fileno(),),
            )
        sock.close()
        self.processes.append(process)
        wait_for(f"{url}{probe}", process, log, 120)
        return url

    def close(self) -> None:
        """Stop every child, give every port back."""
        for process in reversed(self.processes):
            stop(process)
        for reserved in self.ports:
            reserved.close()


def start_partner(embedded: Processes, env: dict[str, str], *options: str) -> str:
    """`mercato partner` (the sandbox), retried on another port if its own bind lost a race."""
    # The sandbox takes --port only; it is retried on another port if that one was taken
    # between choosing and binding (the rule: hand the socket over, or retry).
    for _ in range(5):
        holder = ReservedPort()
        port = holder.port
        holder.close()
        log = embedded.workdir / "partner.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                mercato("partner", "--port", str(port), *options),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=embedded.workdir,
            )
        try:
            wait_for(f"http://127.0.0.1:{port}/_stats", process, log, 60)
        except RuntimeError:
            stop(process)
            if "address already in use" in log.read_text(errors="replace").lower():
                continue
            raise
        embedded.processes.append(process)
        return f"http://127.0.0.1:{port}"
    raise RuntimeError("the partner sandbox found no free port in 5 tries")


def login_when_replicated(client: httpx.Client, who: str, password: str) -> httpx.Response:
    """Log in once identity has applied the person's `user.created` (a moment after start or
    registration). Four tries spread over 6 s: failures count toward the account's five free
    ones, so polling faster would lock the account out instead."""
    for pause in (0, 0.5, 1.5, 4):
        time.sleep(pause)
        answer = client.post(
            "/api/v1/auth/login", json={"username_or_email": who, "password": password}
        )
        if answer.status_code != 401:
            return answer
    return answer


def start_nginx(
    nginx: str, prefix: Path, conf: str, reserved: ReservedPort
) -> subprocess.Popen[bytes]:
    """nginx on `conf` (written to `prefix/nginx.conf`; its relative paths are under `prefix`),
    listening on `reserved`'s port through a socket bound here and handed over as the dev
    cluster does (nginx's `NGINX` variable). Its output goes to `prefix/nginx.log`."""
    (prefix / "tmp").mkdir(exist_ok=True)
    (prefix / "nginx.conf").write_text(conf)
    sock = reserved.socket(listening=True)
    try:
        with (prefix / "nginx.log").open("wb") as log:
            return subprocess.Popen(
                [nginx, "-p", str(prefix), "-c", "nginx.conf", "-g", "daemon off;"],
                env={**os.environ, "NGINX": f"{sock.fileno()};"},
                pass_fds=(sock.fileno(),),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    finally:
        sock.close()  # nginx's now; the holder keeps the port until the test ends
