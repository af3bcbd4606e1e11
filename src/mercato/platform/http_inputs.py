"""What the web layer reads from a request before a use case sees it: JSON bodies whose numbers
stay exact (for money) and the `Idempotency-Key` header.

The rules themselves are pure (`mercato.platform.money.exact_json`,
`mercato.platform.idempotency.check_key`); this module only plugs them into FastAPI.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from fastapi.routing import APIRoute

from mercato.platform.idempotency import check_key
from mercato.platform.money import exact_json


class _ExactJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = exact_json(await self.body())
        return self._json


class ExactJsonRoute(APIRoute):
    """A route whose JSON body keeps numbers exact, for routers that take money.

    `APIRouter(route_class=ExactJsonRoute)`; a malformed body still answers FastAPI's 422
    (`json.JSONDecodeError` is what it catches).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The standard handler, handed a request that parses JSON with `exact_json`."""
        handler = super().get_route_handler()

        async def exact_handler(request: Request) -> Response:
            return await handler(_ExactJsonRequest(request.scope, request.receive))

        return exact_handler


def idempotency_key_header(
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Repeat the same request with the same key to get the same answer once.",
        ),
    ] = None,
) -> str | None:
    """FastAPI dependency reading and checking the `Idempotency-Key` header."""
    return None if idempotency_key is None else check_key(idempotency_key)


IdempotencyKeyDep = Annotated[str | None, Depends(idempotency_key_header)]
