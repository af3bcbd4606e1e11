"""FastAPI dependencies that turn the `Authorization: Bearer` header into a `Principal`.

Use them as `Annotated[Principal, Depends(auth.require_admin)]`. A missing or invalid token
answers 401 with `WWW-Authenticate: Bearer`; a valid token without the needed rights answers 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mercato.platform.auth.principal import ADMIN_ROLE, Principal
from mercato.platform.auth.verify import TokenVerifier
from mercato.platform.errors import Forbidden, Unauthorized

# Declared as a sub-dependency of every guard so OpenAPI shows the bearer security scheme (and
# /docs offers "Authorize"); auto_error=False because the guards word their own 401s.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="JWT",
    description="An access token from POST /api/v1/auth/login or POST /oauth/token.",
)

# The principal of this request, so a route with several guards verifies the token once.
_STATE_KEY = "mercato_principal"

PrincipalDependency = Callable[..., Awaitable[Principal]]


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive)."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class Authenticator:
    """Route guards over a `TokenVerifier`.

    Each guard reads the header from the request itself (the `_credentials` parameter exists
    only for OpenAPI), so guards can also be awaited directly with just the request.
    """

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    async def current(
        self,
        request: Request,
        _credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
    ) -> Principal:
        """The caller; 401 when there is no valid token."""
        principal = await self.optional(request)
        if principal is None:
            raise Unauthorized("authentication required")
        return principal

    async def optional(
        self,
        request: Request,
        _credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
    ) -> Principal | None:
        """The caller, or None without a token; a token that is present but invalid is a 401.

        Failing loudly on a bad token (rather than treating the caller as anonymous) tells a
        client with an expired token to refresh it instead of silently seeing less.
        """
        cached = getattr(request.state, _STATE_KEY, None)
        if isinstance(cached, Principal):
            return cached
        token = bearer_token(request)
        if token is None:
            return None
        principal = await self.verifier.verify(token)
        setattr(request.state, _STATE_KEY, principal)
        return principal

    async def require_user(
        self,
        request: Request,
        _credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
    ) -> Principal:
        """Any valid token, a person's or a machine's (the same as `current`)."""
        return await self.current(request)

    async def require_person(
        self,
        request: Request,
        _credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
    ) -> Principal:
        """A person's token; 403 for a machine token."""
        principal = await self.current(request)
        if principal.is_machine:
            raise Forbidden("this endpoint needs a person's token")
        return principal

    async def require_admin(
        self,
        request: Request,
        _credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
    ) -> Principal:
        """An admin (role `admin`, or a machine with scope `mercato.admin`); 401 / 403."""
        principal = await self.current(request)
        if not principal.is_admin:
            raise Forbidden("admin rights required")
        return principal

    def require_role(self, role: str) -> PrincipalDependency:
        """A dependency accepting a person with `role`; 401 / 403. `require_role("admin")` is
        `require_admin` (so a machine with scope `mercato.admin` passes too)."""
        if role == ADMIN_ROLE:
            return self.require_admin

        async def dependency(
            request: Request,
            _credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
        ) -> Principal:
            principal = await self.current(request)
            if role not in principal.roles:
                raise Forbidden(f"role {role} required")
            return principal

        dependency.__name__ = f"require_role_{role}"
        return dependency

    def require_scope(self, scope: str) -> PrincipalDependency:
        """A dependency accepting a token that carries `scope`, or an admin; 401 / 403."""

        async def dependency(
            request: Request,
            _credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
        ) -> Principal:
            principal = await self.current(request)
            if not (principal.has_scope(scope) or principal.is_admin):
                # RFC 6750 §3.1: tell the client which scope it lacks.
                raise Forbidden(
                    f"scope {scope} required",
                    challenge=f'Bearer error="insufficient_scope", scope="{scope}"',
                )
            return principal

        dependency.__name__ = f"require_scope_{scope.replace('.', '_').replace(':', '_')}"
        return dependency

    def require_admin_or_scope(self, scope: str) -> PrincipalDependency:
        """`require_scope` by its explicit name, for endpoints listed as "admin, client:<scope>"."""
        return self.require_scope(scope)
