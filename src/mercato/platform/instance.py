"""Where a running `mercato run` answers, recorded in its data dir for the CLI to find.

`mercato run` writes `<data dir>/instance.json` (0600) once it listens and removes it on a clean
stop; CLI commands pointed at the same data dir read it and talk to that process over its HTTP
API, so they report what it does (its jobs, its upstreams) and reach it at its real port. A
record left by a process that died is ignored: its pid is gone or its URL does not answer.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

INSTANCE_FILE = "instance.json"


class InstanceError(RuntimeError):
    """The running instance cannot be asked (the message is one line)."""


@dataclass(frozen=True)
class Instance:
    """One running embedded process.

    `url` is where it listens (what a CLI on this machine calls); `issuer` is what its discovery
    advertises and its tokens carry; `public_url` is where its own jobs reach its API.
    """

    url: str
    issuer: str
    public_url: str
    pid: int
    # Where the generated bootstrap admin's credentials are (the path only, never the secret).
    admin_credentials: str | None = None


def url_host(host: str) -> str:
    """`host` as it goes into a URL a client can call: a wildcard bind becomes loopback (the
    one address of every interface that is sure to answer on this machine), IPv6 in brackets."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - naming the wildcard, not binding to it
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host  # a name
    return f"[{address}]" if address.version == 6 else str(address)


def listen_url(host: str, port: int) -> str:
    """The base URL of a server bound to `host`:`port`."""
    return f"http://{url_host(host)}:{port}"


def record_path(data_dir: Path) -> Path:
    """Where the record of the instance using `data_dir` lives."""
    return data_dir / INSTANCE_FILE


def write(data_dir: Path, instance: Instance) -> Path:
    """Record `instance` (0600 from the start; replaced atomically, so a reader never sees half)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = record_path(data_dir)
    temporary = path.with_name(f".{INSTANCE_FILE}.{instance.pid}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(instance), handle)
    os.replace(temporary, path)
    return path


def remove(data_dir: Path, pid: int) -> None:
    """Remove the record if it is still `pid`'s (a later instance's record stays)."""
    found = read(data_dir)
    if found is not None and found.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            record_path(data_dir).unlink()


def read(data_dir: Path) -> Instance | None:
    """The recorded instance, or None when there is no (readable) record."""
    try:
        raw = json.loads(record_path(data_dir).read_text(encoding="utf-8"))
        return Instance(**raw)
    except (OSError, ValueError, TypeError):
        return None


def running(data_dir: Path, timeout: float = 2.0) -> Instance | None:
    """The recorded instance if it is alive and answers `/health`, else None."""
    found = read(data_dir)
    if found is None or not _alive(found.pid):
        return None
    try:
        answer = httpx.get(f"{found.url}/health", timeout=timeout)
    except httpx.HTTPError:
        return None
    return found if answer.status_code == 200 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def read_credentials(path: Path) -> tuple[str, str] | None:
    """(username, password) from the bootstrap admin's credentials file, or None."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
    if "username" in fields and "password" in fields:
        return fields["username"].strip(), fields["password"].strip()
    return None


def detail(response: httpx.Response) -> str:
    """A problem+json answer's `detail` (or `title`), else its status line, on one line."""
    text = f"{response.status_code} {response.reason_phrase}"
    try:
        body: Any = response.json()
    except ValueError:
        return text
    if isinstance(body, dict):
        said = body.get("detail") or body.get("title") or body.get("error_description")
        if isinstance(said, str) and said:
            return " ".join(said.split())
    return text


@contextlib.contextmanager
def admin_session(
    instance: Instance, username: str, password: str, timeout: float = 30.0
) -> Iterator[httpx.Client]:
    """An HTTP client on the instance, logged in as an admin (logged out again at the end)."""
    with httpx.Client(base_url=instance.url, timeout=timeout) as client:
        try:
            answer = client.post(
                "/api/v1/auth/login", json={"username_or_email": username, "password": password}
            )
        except httpx.HTTPError as exc:
            raise InstanceError(f"the instance at {instance.url} did not answer: {exc}") from None
        if answer.status_code != 200:
            raise InstanceError(
                f"the instance at {instance.url} refused the admin login ({detail(answer)}); "
                "set MERCATO_ADMIN_PASSWORD (and MERCATO_ADMIN_EMAIL) to an admin's"
            )
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        try:
            yield client
        finally:
            # The session's refresh family is revoked: nothing this command held stays usable.
            with contextlib.suppress(httpx.HTTPError):
                client.post("/api/v1/auth/logout")


def get_json(client: httpx.Client, path: str, **params: Any) -> Any:
    """GET `path` on the instance; InstanceError with the problem's detail unless 200."""
    try:
        answer = client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise InstanceError(f"GET {path} failed: {exc}") from None
    if answer.status_code != 200:
        raise InstanceError(f"GET {path}: {detail(answer)}")
    return answer.json()
