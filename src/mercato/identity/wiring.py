"""Builds identity's dependencies once per process from the platform's service context."""

from __future__ import annotations

from datetime import timedelta

from mercato.identity.budget import Budget, DatabaseBudget, RedisBudget
from mercato.identity.cache import ClientCache
from mercato.identity.keyring import Keyring, ReadFactory
from mercato.identity.settings import IdentitySettings
from mercato.identity.tokens import IdentityDeps
from mercato.platform.passwords import verify_password
from mercato.platform.request_window import RedisRequestWindow
from mercato.platform.secrets import SecretBox, secret_box
from mercato.platform.service import ServiceContext
from mercato.platform.uow import UnitOfWorkFactory

# Past a token's `exp`, a verifier still accepts it for its leeway; clocks drift a little.
_KEY_RETENTION_MARGIN = timedelta(minutes=5)


def build_keyring(
    settings: IdentitySettings,
    uow_factory: UnitOfWorkFactory,
    read: ReadFactory,
    *,
    secrets: SecretBox,
) -> Keyring:
    """The keyring over identity's database, as configured, sealing with `secrets`."""
    passphrase = settings.identity_key_passphrase
    lifetime = max(settings.identity_person_token_seconds, settings.identity_machine_token_seconds)
    return Keyring(
        uow_factory,
        read,
        alg=settings.identity_signing_alg,
        passphrase=passphrase.get_secret_value() if passphrase else None,
        secrets=secrets,
        retention=timedelta(seconds=lifetime) + _KEY_RETENTION_MARGIN,
        refresh_every=settings.identity_key_refresh_seconds,
    )


def build_deps(ctx: ServiceContext) -> IdentityDeps:
    """Identity's dependencies in this process (`ServiceModule.dependencies`: built once, at
    start, and handed to its router, consumers and hooks)."""
    settings = IdentitySettings()
    keyring = build_keyring(settings, ctx.uow, ctx.database.read, secrets=secret_box(ctx.settings))
    budget: Budget = (
        RedisBudget(RedisRequestWindow(ctx.shared.redis), f"{ctx.settings.redis_prefix}:identity")
        if ctx.shared.redis is not None
        else DatabaseBudget(ctx.uow)
    )
    return IdentityDeps(
        uow=ctx.uow,
        read=ctx.database.read,
        keyring=keyring,
        revocations=ctx.shared.revocations,
        budget=budget,
        clients=ClientCache(
            settings.identity_client_cache_seconds if ctx.role == "embedded" else 0.0
        ),
        settings=settings,
        issuer=ctx.settings.issuer,
        audience=ctx.settings.audience,
        check_password=verify_password,
        verifier=ctx.auth.verifier,
    )
