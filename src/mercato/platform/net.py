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

import ipaddress
from collections.abc import Iterable, Sequence

from fastapi import FastAPI
from starlette.requests import Request
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

UNKNOWN = "unknown"


def parse_networks(values: Iterable[str]) -> tuple[str, ...]:
    """The trusted proxies as normalised CIDRs (`10.0.0.7` is `10.0.0.7/32`).

    Refuses what is not a network, `*` included: trusting every peer lets any client name any
    address, which is what this setting exists to prevent.
    """
    networks: list[str] = []
    for raw in values:
        value = raw.strip()
        if not value:
            continue
        try:
            networks.append(str(ipaddress.ip_network(value, strict=True)))
        except ValueError:
            raise ValueError(
                f"{value[:60]!r} is not a CIDR network (e.g. 10.0.0.0/8, 127.0.0.2/32); "
                "host bits must be zero"
            ) from None
    return tuple(dict.fromkeys(networks))


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
