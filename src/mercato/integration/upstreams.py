"""The outbound side: one resilient client and token manager per upstream, and the adapters.

Upstreams (DESIGN §5): `identity` (this platform's own token endpoint, for the exporter client),
`catalog` (this platform's product export, called with identity's tokens) and the external
provider (named by `MERCATO_EXTERNAL_SOURCE`, `partner` by default). Every outbound call goes
through a `ResilientClient`; token requests through a `TokenManager` whose budget lives in a
shared `TokenStore`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mercato.integration.domain import ExternalProduct, dummyjson_product
from mercato.integration.settings import IntegrationSettings
from mercato.platform.http import CircuitBreaker, ResilientClient, RetryPolicy
from mercato.platform.settings import Settings
from mercato.platform.token_manager import TokenManager
from mercato.platform.token_stores import TokenStore

IDENTITY = "identity"
CATALOG = "catalog"


def platform_base_url(settings: Settings, integ: IntegrationSettings) -> str:
    """Where this installation's API answers: MERCATO_PUBLIC_URL, else the issuer."""
    return (integ.public_url or settings.issuer).rstrip("/")


def identity_base_url(settings: Settings, integ: IntegrationSettings) -> str:
    """Identity's base URL: MERCATO_IDENTITY_URL, else the installation's."""
    return (settings.identity_url or platform_base_url(settings, integ)).rstrip("/")


def catalog_base_url(settings: Settings, integ: IntegrationSettings) -> str:
    """Catalog's base URL: MERCATO_CATALOG_URL, else the installation's."""
    return (integ.catalog_url or platform_base_url(settings, integ)).rstrip("/")


def external_problem(integ: IntegrationSettings, *, needs_token: bool) -> str | None:
    """Why the external provider cannot be used, or None when it is configured."""
    if not integ.external_base_url:
        return "no external provider configured (set MERCATO_EXTERNAL_BASE_URL)"
    if needs_token and not (integ.external_client_id and integ.external_client_secret):
        return (
            "no client credentials for the external provider "
            "(set MERCATO_EXTERNAL_CLIENT_ID and MERCATO_EXTERNAL_CLIENT_SECRET)"
        )
    return None


def resilient(
    name: str, base_url: str, integ: IntegrationSettings, *, total_timeout: float | None = None
) -> ResilientClient:
    """A client for one upstream with the configured timeouts and a breaker of its own."""
    policy = RetryPolicy(
        attempt_timeout=integ.http_attempt_timeout,
        total_timeout=total_timeout or integ.http_total_timeout,
    )
    return ResilientClient(name, base_url=base_url, retry=policy, breaker=CircuitBreaker(name))


@dataclass
class Upstream:
    """One upstream's client and, when it needs tokens, its token manager."""

    name: str
    http: ResilientClient
    tokens: TokenManager | None = None

    async def aclose(self) -> None:
        """Close the client."""
        await self.http.aclose()


def external_upstream(
    integ: IntegrationSettings, store: TokenStore, clock: Callable[[], float] | None = None
) -> Upstream | None:
    """The external provider's upstream, or None when it is not configured."""
    if external_problem(integ, needs_token=False) is not None:
        return None
    assert integ.external_base_url is not None
    base = integ.external_base_url.rstrip("/")
    http = resilient(integ.external_source, base, integ)
    tokens = None
    if external_problem(integ, needs_token=True) is None:
        assert integ.external_client_id and integ.external_client_secret
        extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
        tokens = TokenManager(
            integ.external_source,
            token_url=integ.external_token_url or f"{base}/oauth/token",
            client_id=integ.external_client_id,
            client_secret=integ.external_client_secret.get_secret_value(),
            scope=integ.external_scope,
            http=http,
            budget_per_hour=integ.external_token_budget_per_hour,
            store=store,
            **extra,
        )
    return Upstream(integ.external_source, http, tokens)


def identity_tokens(
    settings: Settings,
    integ: IntegrationSettings,
    http: ResilientClient,
    store: TokenStore,
    client_id: str,
    client_secret: str,
    scope: str,
) -> TokenManager:
    """The token manager of the exporter client against this platform's identity."""
    return TokenManager(
        IDENTITY,
        token_url=f"{identity_base_url(settings, integ)}/oauth/token",
        client_id=client_id,
        client_secret=client_secret,
        scope=scope,
        http=http,
        budget_per_hour=integ.exporter_token_budget_per_hour,
        store=store,
    )


# ---------------------------------------------------------------------------------------------
# Product providers (pluggable: MERCATO_EXTERNAL_PROVIDER names one of PROVIDERS)


class ProductProvider(Protocol):
    """Reads a provider's products page by page."""

    def pages(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The raw products, one page at a time."""
        ...

    def parse(self, raw: dict[str, Any]) -> ExternalProduct:
        """One raw product, normalised; ValueError when it is unusable."""
        ...


class DummyJsonProducts:
    """DummyJSON's `GET /products?limit&skip` → `{products, total, skip, limit}`."""

    def __init__(self, http: ResilientClient, path: str, page_size: int) -> None:
        self.http = http
        self.path = path
        self.page_size = page_size

    async def pages(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Every page until `total` is reached (or a page comes back empty)."""
        skip = 0
        while True:
            response = await self.http.get(
                self.path, params={"limit": self.page_size, "skip": skip}
            )
            response.raise_for_status()
            body = response.json()
            products = body.get("products") if isinstance(body, dict) else None
            if not isinstance(products, list):
                raise ValueError("the provider's answer has no 'products' list")
            # Every item, objects or not: `parse` refuses a non-object, so the run counts it
            # as failed instead of losing it silently.
            page: list[dict[str, Any]] = list(products)
            if page:
                yield page
            skip += len(products)
            total = body.get("total")
            if not products or not isinstance(total, int) or skip >= total:
                return

    def parse(self, raw: dict[str, Any]) -> ExternalProduct:
        """See `ProductProvider`."""
        return dummyjson_product(raw)


PROVIDERS: dict[str, Callable[[ResilientClient, str, int], ProductProvider]] = {
    "dummyjson": DummyJsonProducts,
}
