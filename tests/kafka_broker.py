"""A real Kafka-protocol broker for tests and benches: Tansu (`mercato.tansu`), a process of
our own per session or test. Tansu 0.6's memory storage loses topics and offsets when the
process stops; `OutageProxy` stands in for a broker restart that keeps its data (a real
cluster's log is durable), cutting every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from mercato.tansu import BrokerUnavailable, Tansu
from tests import services


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
        self.cut = 0  # connections cut by outages
        self.refused = 0  # connections refused while down
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def listen(self) -> int:
        """Listen on a port the kernel picks (and keep it); answer it."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down or self.target_port is None:
            self.refused += 1
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
            self.cut += 1
            writer.transport.abort()
        await asyncio.sleep(seconds)
        self.down = False

    async def close(self) -> None:
        """Stop listening and cut what is left."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
