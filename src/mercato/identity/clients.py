"""Machine clients: registration by admins, authentication, and the bootstrap exporter client."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from mercato.identity.contracts import EXPORTER_CLIENT_ID, EXPORTER_SCOPES, ExporterCredentials
from mercato.identity.domain import (
    GRANT_CLIENT_CREDENTIALS,
    WEB_CLIENT_ID,
    Client,
    check_client_id,
    check_grant_types,
    check_scopes,
    digest,
    new_secret,
    secret_matches,
)
from mercato.identity.sessions_store import SessionRepository
from mercato.identity.store import BootstrapRepository, ClientRepository, ClientTaken
from mercato.identity.tokens import IdentityDeps, end_families, revoke_client_tokens
from mercato.platform.clock import utcnow
from mercato.platform.errors import Conflict, Invalid, NotFound, RuleBroken

log = structlog.get_logger("mercato.identity")


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: `error` code, description, HTTP status and headers."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}


def invalid_client(description: str = "client authentication failed") -> OAuthError:
    """401 `invalid_client`, naming the Basic scheme a client may use (RFC 6749 §5.2)."""
    return OAuthError(
        "invalid_client",
        description,
        status=401,
        headers={"WWW-Authenticate": 'Basic realm="mercato", charset="UTF-8"'},
    )


@dataclass(frozen=True)
class ClientCredentials:
    """What a request presented to authenticate its client; `repr` hides the secret."""

    client_id: str
    secret: str | None = field(repr=False)


@dataclass(frozen=True)
class AuthenticatedClient:
    """The client a request authenticated as; `client` is None for the public web client."""

    client_id: str
    client: Client | None

    @property
    def confidential(self) -> bool:
        """A registered client that proved its secret."""
        return self.client is not None


async def authenticate_client(
    deps: IdentityDeps, presented: ClientCredentials | None, *, allow_public: bool
) -> AuthenticatedClient:
    """The client behind the presented credentials; `invalid_client` otherwise.

    The public web client (people's sessions) needs no secret and is accepted only where
    `allow_public` says so (refreshing and revoking its own refresh tokens).
    """
    if presented is None:
        raise invalid_client("client authentication required")
    if presented.client_id == WEB_CLIENT_ID and presented.secret is None:
        if not allow_public:
            raise invalid_client("this request needs a confidential client")
        return AuthenticatedClient(WEB_CLIENT_ID, None)
    client_id = presented.client_id

    async def read() -> Client | None:
        async with deps.read() as conn:
            return await ClientRepository(conn).get(client_id)

    client = await deps.clients.load(client_id, read)
    # Compared even when the client is unknown, so both failures cost the same.
    if not secret_matches(client.secret_hash if client else None, presented.secret or ""):
        log.info("client authentication failed")
        raise invalid_client()
    assert client is not None
    return AuthenticatedClient(client.client_id, client)


@dataclass(frozen=True)
class ClientForm:
    """An admin's client registration."""

    name: str
    scopes: Sequence[str]
    client_id: str | None = None
    token_budget_per_hour: int | None = None
    grant_types: Sequence[str] = (GRANT_CLIENT_CREDENTIALS,)


async def register_client(deps: IdentityDeps, form: ClientForm) -> tuple[Client, str]:
    """Register a client; answers it and its secret, which is shown this once and not stored."""
    try:
        client_id = check_client_id(form.client_id or f"client-{secrets.token_hex(8)}")
        scopes = check_scopes(form.scopes)
        grant_types = check_grant_types(form.grant_types)
        name = form.name.strip()
        if not name:
            raise RuleBroken("name", "must not be blank")
    except RuleBroken as exc:
        raise Invalid.of(exc) from None
    secret = new_secret()
    client = Client(
        client_id=client_id,
        name=name,
        secret_hash=digest(secret),
        scopes=tuple(scopes),
        grant_types=tuple(grant_types),
        token_budget_per_hour=form.token_budget_per_hour,
        created_at=utcnow(),
    )
    async with deps.uow() as uow:
        try:
            await uow.repository(ClientRepository).add(client)
        except ClientTaken:
            raise Conflict(
                "client_id taken",
                errors=[{"loc": ["body", "client_id"], "msg": "taken", "type": "conflict"}],
            ) from None
    log.info("client registered", client_id=client_id, scopes=scopes)
    return client, secret


async def list_clients(deps: IdentityDeps, skip: int, limit: int) -> tuple[list[Client], int]:
    """A page of registered clients."""
    async with deps.read() as conn:
        return await ClientRepository(conn).page(skip, limit)


async def delete_client(deps: IdentityDeps, client_id: str) -> None:
    """Remove a client and end the sessions (refresh families) issued to it."""
    async with deps.uow() as uow:
        deps.clients.forget(client_id)
        if not await uow.repository(ClientRepository).delete(client_id):
            raise NotFound("no such client")
        families = await uow.repository(SessionRepository).families_of_client(client_id)
        await end_families(deps, uow, families, reason="client_deleted")
        await revoke_client_tokens(deps, uow, client_id)
    # Again once committed: a token request that read the row before the commit must not
    # have put it back (`put` refuses reads begun before a forget).
    deps.clients.forget(client_id)
    log.info("client deleted", client_id=client_id)


async def provision_exporter(
    deps: IdentityDeps, configured_secret: str | None
) -> ExporterCredentials | None:
    """Create the export job's client on first start (DESIGN §6); later starts change nothing.

    Answers its credentials whenever the secret is known here: on first start, or on any start
    when `MERCATO_EXPORTER_CLIENT_SECRET` is set and still matches.
    """
    async with deps.read() as conn:
        provisioned = await BootstrapRepository(conn).value("exporter_client")
    if provisioned is None:
        secret = configured_secret or new_secret()
        client = Client(
            client_id=EXPORTER_CLIENT_ID,
            name="Product export job",
            secret_hash=digest(secret),
            scopes=EXPORTER_SCOPES,
            grant_types=(GRANT_CLIENT_CREDENTIALS,),
            token_budget_per_hour=None,
            created_at=utcnow(),
        )
        async with deps.uow() as uow:
            if await uow.repository(BootstrapRepository).claim("exporter_client", client.client_id):
                await uow.repository(ClientRepository).add(client)
                log.info("exporter client provisioned", client_id=client.client_id)
                return ExporterCredentials(client.client_id, secret)
    if configured_secret is None:
        return None
    async with deps.read() as conn:
        client_row = await ClientRepository(conn).get(EXPORTER_CLIENT_ID)
    if client_row is not None and secret_matches(client_row.secret_hash, configured_secret):
        return ExporterCredentials(EXPORTER_CLIENT_ID, configured_secret)
    log.warning("MERCATO_EXPORTER_CLIENT_SECRET does not match the provisioned exporter client")
    return None
