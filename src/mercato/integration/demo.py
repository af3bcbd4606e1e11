"""`mercato run --demo`: the partner sandbox in-process, and the syncs pointed at it."""

from __future__ import annotations

import asyncio
import socket

import structlog
import uvicorn
from pydantic import SecretStr

from mercato.integration.partner import create_partner_app
from mercato.integration.settings import IntegrationSettings

log = structlog.get_logger("mercato.integration.demo")


class DemoPartner:
    """The sandbox served by uvicorn on this process's event loop."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        """Where the sandbox answers."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on the configured port, or on a free one when it is taken."""
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_partner_app(products=30, orders=20),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="demo-partner")
        for _ in range(500):
            if self._server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        log.info("demo partner sandbox started", url=self.base_url)

    async def stop(self) -> None:
        """Shut the sandbox down."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)


def demo_settings(integ: IntegrationSettings, partner: DemoPartner) -> IntegrationSettings:
    """The settings with the syncs pointed at the sandbox, firing a few seconds after start."""
    return integ.model_copy(
        update={
            "external_base_url": partner.base_url,
            "external_token_url": None,
            "external_client_id": "partner-client",
            "external_client_secret": SecretStr("partner-secret"),
            "external_source": "partner",
            "job_sync_external_products_initial_delay": 3.0,
            "job_sync_external_orders_initial_delay": 5.0,
        }
    )
