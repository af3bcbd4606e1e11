"""Who is calling: the client address behind trusted proxies (`MERCATO_TRUSTED_PROXIES`).

A socket peer inside a trusted network is a proxy that says, in `X-Forwarded-For`, whom it
forwards for; any other peer is the client itself and its headers are ignored. Of the forwarded
chain the client is the rightmost entry that is not itself a trusted proxy (each proxy appends
the address it saw, so everything left of the first untrusted entry is the client's to invent).

The served process (`mercato.platform.serving`, uvicorn's `forwarded_allow_ips`) and the app
itself (`trust_forwarded_headers`, also what a test drives in-process) apply the same networks
with the same middleware, uvicorn's own, so both agree on who the client is; applying it twice
changes nothing (the address the first pass settles on is either untrusted, which the second
pass leaves alone, or the leftmost entry, which the second pass picks again).
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.requests import Request
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

UNKNOWN = "unknown"


def trust_forwarded_headers(app: FastAPI, trusted: Sequence[str]) -> None:
    """Make `app` read `X-Forwarded-For`/`-Proto` from peers in `trusted` (CIDRs) only; call
    after its other middleware, so that all of it sees the client, not the proxy."""
    if trusted:  # else nobody is trusted: the socket peer is the client
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(trusted))


def client_address(request: Request) -> str:
    """The client's address, as the per-address limits (login throttle...) must key on it.

    `trust_forwarded_headers` has already replaced a trusted proxy's address with the client's, so
    this is the one place that says which address a request comes from.
    """
    return request.client.host if request.client else UNKNOWN
