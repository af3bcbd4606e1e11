"""Where this process finds identity's public keys: in-process with identity, else its JWKS."""

from __future__ import annotations

from typing import Any

import httpx

from mercato.platform.auth import KeySource, RemoteJwksKeySource, StaticKeySource
from mercato.platform.service import SharedState


class PlatformKeySource:
    """Prefers identity's in-process keys; falls back to its JWKS URL (distributed mode)."""

    def __init__(self, shared: SharedState, identity_url: str | None, client: httpx.AsyncClient):
        self._shared = shared
        self._local: KeySource | None = None
        self._remote: KeySource | None = None
        if identity_url:
            url = identity_url.rstrip("/") + "/.well-known/jwks.json"
            self._remote = RemoteJwksKeySource(url, client)

    async def get(self, kid: str) -> Any:
        """The public key named `kid`, or None."""
        if self._shared.local_jwks is not None:
            if self._local is None:
                self._local = StaticKeySource(self._shared.local_jwks)
            return await self._local.get(kid)
        if self._remote is not None:
            return await self._remote.get(kid)
        return None
