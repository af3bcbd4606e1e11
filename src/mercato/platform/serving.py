"""Serving an ASGI app with uvicorn on a host and port, or on a socket handed over (`--fd`)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import uvicorn

from mercato.platform.runtime import ConfigurationError
from mercato.platform.settings import get_settings


def serve(
    app: Any,
    host: str,
    port: int,
    fd: int | None = None,
    *,
    on_listening: Callable[[], None] | None = None,
    on_stopped: Callable[[], None] | None = None,
    say: Callable[[str], None] = print,
) -> None:
    """Serve `app` until SIGINT/SIGTERM; `on_listening` runs once it accepts connections,
    `on_stopped` once it has shut down (also when start-up failed after the app started)."""

    class Server(uvicorn.Server):
        """uvicorn's server, telling when it listens and when it has stopped."""

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_listening is not None:
                on_listening()

        async def shutdown(self, sockets: Any = None) -> None:
            # Here, not after run(): uvicorn re-raises a caught SIGTERM once it has stopped.
            try:
                await super().shutdown(sockets=sockets)
            finally:
                if on_stopped is not None:
                    on_stopped()

    # Forwarded headers are believed from MERCATO_TRUSTED_PROXIES only, the networks the app
    # trusts too (mercato.platform.net): uvicorn's own default trusts 127.0.0.1, which lets any
    # local process claim any client address. No `server` banner.
    trusted = list(get_settings().trusted_proxies)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted,
        server_header=False,
    )
    if fd is None:
        Server(config).run()
        return
    # A socket the parent bound and handed over (no window in which another process could
    # take the port). Not uvicorn's own `fd=`, which wraps every descriptor as AF_UNIX: read
    # from the descriptor, the family is TCP's, so the loop treats it as such (asyncio sets
    # TCP_NODELAY on AF_INET/AF_INET6 connections only). uvicorn listens on it once the app
    # has started: until this process is ready a connection is refused (a proxy tries another
    # replica) rather than left waiting in the backlog.
    sock = socket.socket(fileno=fd)  # family and type read from the descriptor
    if sock.type != socket.SOCK_STREAM:
        raise ConfigurationError(f"descriptor {fd} is not a stream socket")
    say(f"serving on {sock.getsockname()} (descriptor {fd})")
    Server(config).run(sockets=[sock])


def bound_address(fd: int) -> tuple[str, int]:
    """Where an inherited socket is bound, so the banner and the public URL name it."""
    try:
        with socket.socket(fileno=socket.dup(fd)) as sock:
            address = sock.getsockname()
    except OSError as exc:
        raise ConfigurationError(f"descriptor {fd} is not a usable socket: {exc}") from None
    if not isinstance(address, tuple):
        raise ConfigurationError(f"descriptor {fd} is not a TCP socket")
    return str(address[0]), int(address[1])
