"""The interoperability suite (issue 11): Mercato's identity driven by OAuth 2.0 clients and JOSE
libraries nobody here wrote — authlib, requests-oauthlib, PyJWT's `PyJWKClient`, joserfc, and
Node's openid-client and jose — against `mercato run` started as a user starts it, on a port
that is not the default one.

Each module starts its own `mercato run` (module-scoped), so `make test`'s parallel pass
(`--dist loadfile`) gives every module one server. Nothing here sets `MERCATO_ISSUER` or
`MERCATO_PUBLIC_URL`: the server must work out where it answers by itself.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import services
from tests.running import Processes, login_when_replicated, mercato

ADMIN_PASSWORD = "Interop-Adm1n-Passw0rd!"
NODE_DIR = Path(__file__).parent / "node"
INTROSPECT_SCOPE = "mercato.introspect"
AUDIENCE = "mercato"
DISCOVERY = "/.well-known/openid-configuration"
RFC8414 = "/.well-known/oauth-authorization-server"
# Every URL a client learns from discovery; each must be where the server answers.
ADVERTISED_URLS = (
    "token_endpoint",
    "jwks_uri",
    "revocation_endpoint",
    "introspection_endpoint",
)

NodeRunner = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class MachineClient:
    """A confidential client made through the admin API (its secret is shown once)."""

    client_id: str
    client_secret: str = field(repr=False)


@dataclass
class Server:
    """One `mercato run` of this module and an admin session on it."""

    base_url: str
    admin_token: str = field(repr=False)
    workdir: Path

    def http(self) -> httpx.Client:
        """A plain HTTP client of the server."""
        return httpx.Client(base_url=self.base_url, timeout=30)

    def new_client(self, name: str, scopes: list[str]) -> MachineClient:
        """`POST /api/v1/admin/clients` as the admin: a new machine client with `scopes`."""
        with self.http() as http:
            answer = http.post(
                "/api/v1/admin/clients",
                json={"name": name, "scopes": scopes},
                headers={"Authorization": f"Bearer {self.admin_token}"},
            )
        assert answer.status_code == 201, answer.text
        body = answer.json()
        return MachineClient(body["client_id"], body["client_secret"])

    def me(self, access_token: str) -> httpx.Response:
        """`GET /api/v1/auth/me` with a bearer token: how Mercato itself sees that token."""
        with self.http() as http:
            return http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {access_token}"})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`mercato run` on a port of its own (not 8000), with only the admin password set."""
    workdir = tmp_path_factory.mktemp("interop")
    processes = Processes(workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
    env.update(
        {
            "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD,
            # Scheduled jobs play no part in these flows; they would only add load and log noise.
            "MERCATO_JOB_EXPORT_PRODUCTS_INITIAL_DELAY": "3600",
            "MERCATO_JOB_SYNC_EXTERNAL_PRODUCTS_INITIAL_DELAY": "3600",
            "MERCATO_JOB_SYNC_EXTERNAL_ORDERS_INITIAL_DELAY": "3600",
        }
    )
    try:
        # Not named "mercato": `Processes.spawn` would then set MERCATO_ISSUER/PUBLIC_URL for it.
        args = mercato("run", "--data-dir", str(workdir / "data"))
        base_url = processes.spawn("interop-mercato", args, env, "/ready")
        with httpx.Client(base_url=base_url, timeout=30) as http:
            login = login_when_replicated(http, "admin", ADMIN_PASSWORD)
        assert login.status_code == 200, login.text
        yield Server(base_url, login.json()["access_token"], workdir)
    finally:
        processes.close()


@pytest.fixture(scope="module")
def metadata(server: Server) -> dict[str, Any]:
    """The discovery document, once it names the server where it runs.

    Every flow follows it, so it is checked first: a client following a document that names
    another address would send its secret there.
    """
    with server.http() as http:
        document: dict[str, Any] = http.get(DISCOVERY).json()
    assert document["issuer"] == server.base_url, (
        f"discovery advertises issuer {document['issuer']!r}, the server runs at "
        f"{server.base_url!r}"
    )
    for name in ADVERTISED_URLS:
        assert document[name].startswith(f"{server.base_url}/"), (name, document[name])
    return document


def _unavailable(reason: str) -> None:
    # CI must run every client; a developer without Node or the registry gets a skip.
    if services.IN_CI:
        pytest.fail(f"{reason} (CI=true: the Node clients must run)")
    pytest.skip(reason)


def _installed() -> bool:
    # npm writes node_modules/.package-lock.json last; older than the lock means a stale tree.
    hidden = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    return hidden.exists() and hidden.stat().st_mtime >= lock.stat().st_mtime


@pytest.fixture(scope="session")
def node() -> NodeRunner:
    """Runs a script of tests/interop/node (JSON in on stdin, JSON out on stdout), after
    installing the pinned packages with `npm ci` if they are missing."""
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    if node_bin is None or npm_bin is None:
        _unavailable("node and npm are needed for the openid-client and jose tests")
    assert node_bin is not None and npm_bin is not None
    # One install at a time, whoever else runs this suite on the machine (npm ci empties
    # node_modules first).
    key = hashlib.sha256(str(NODE_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"mercato-interop-npm-{key}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed():
            try:
                done = subprocess.run(
                    [npm_bin, "ci", "--no-audit", "--no-fund"],
                    cwd=NODE_DIR,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                _unavailable("npm ci in tests/interop/node did not finish in 300 s")
            if done.returncode != 0:
                _unavailable(f"npm ci in tests/interop/node failed:\n{done.stderr[-2000:]}")

    def run(script: str, payload: dict[str, Any]) -> dict[str, Any]:
        done = subprocess.run(
            [node_bin, str(NODE_DIR / script)],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"node {script} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    return run
