"""Checks of the HTTP settings: trusted proxies (`MERCATO_TRUSTED_PROXIES`, applied by
`mercato.platform.net`) and CORS origins (`MERCATO_CORS_ORIGINS`, applied by
`mercato.platform.browser`).

Pure, so that reading the settings loads no web framework: use cases read settings too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit


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


def parse_origins(values: Iterable[str]) -> tuple[str, ...]:
    """The CORS allow-list as `scheme://host[:port]` origins; refuses anything else (`*`, a
    path, a trailing slash), so a typo cannot open the API to every site."""
    origins: list[str] = []
    for raw in values:
        value = raw.strip()
        if not value:
            continue
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username
        ):
            raise ValueError(
                f"{value[:80]!r} is not an origin: scheme://host[:port], e.g. "
                "https://shop.example.com"
            )
        origins.append(value.lower())
    return tuple(dict.fromkeys(origins))
