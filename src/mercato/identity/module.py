"""How the platform runs identity: routes, consumers, migrations, first-start provisioning."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from fastapi import APIRouter

from mercato.accounts.contracts import UserCreated, UserDeleted, UserUpdated
from mercato.identity import handlers
from mercato.identity.api import build_router
from mercato.identity.clients import provision_exporter
from mercato.identity.contracts import ExporterHandover
from mercato.identity.oauth_api import build_oauth_router
from mercato.identity.sessions_store import RevocationRepository, SessionRepository
from mercato.identity.store import ThrottleRepository
from mercato.identity.subject_store import SubjectCutOffRepository
from mercato.identity.tokens import IdentityDeps, restore_revocations
from mercato.identity.wiring import build_deps
from mercato.platform.aio import wait_any
from mercato.platform.clock import utcnow
from mercato.platform.migrations import MigrationHistory
from mercato.platform.service import BackgroundTask, ServiceContext, ServiceModule

log = structlog.get_logger("mercato.identity")

PRUNE_EVERY = 600.0


async def start(ctx: ServiceContext[IdentityDeps]) -> None:
    """Provision a signing key and the exporter client on first start, publish the JWKS
    in-process, and put back the revocations a restart would otherwise forget."""
    deps = ctx.deps
    await deps.keyring.provision()
    await deps.keyring.load()
    ctx.shared.local_jwks = deps.keyring.jwks_on_miss
    restored = await restore_revocations(deps)
    secret = deps.settings.exporter_client_secret
    credentials = await provision_exporter(deps, secret.get_secret_value() if secret else None)
    if credentials is not None:
        ctx.shared.handovers.of(ExporterHandover).credentials = credentials
    log.info("identity ready", revocations_restored=restored)


def router(ctx: ServiceContext[IdentityDeps]) -> APIRouter:
    """People's, admins' and OAuth routes."""
    combined = APIRouter()
    combined.include_router(build_router(ctx))
    combined.include_router(build_oauth_router(ctx))
    return combined


async def prune(deps: IdentityDeps) -> None:
    """Forget expired tokens, revocations (of tokens, clients and people) and stale throttle
    counters."""
    now = utcnow()
    epoch = int(time.time())
    async with deps.uow() as uow:
        await uow.repository(SessionRepository).prune(now, epoch)
        await uow.repository(RevocationRepository).prune(epoch)
        await uow.repository(SubjectCutOffRepository).prune(epoch)
        await uow.repository(ThrottleRepository).prune(
            epoch - deps.settings.identity_login_forget_seconds
        )


def background(ctx: ServiceContext[IdentityDeps]) -> Sequence[BackgroundTask]:
    """The pruning loop, and (with Redis) the loop that keeps revocations in the shared store."""

    async def loop(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await wait_any(stop, timeout=PRUNE_EVERY)
            if not stop.is_set():
                await prune(ctx.deps)

    if ctx.shared.redis is None:
        return [loop]
    return [loop, shared_revocations_keeper(ctx)]


def shared_revocations_keeper(ctx: ServiceContext[IdentityDeps]) -> BackgroundTask:
    """Put the revocations back in Redis whenever Redis has lost them.

    A Redis without persistence (or a new one) forgets every revoked token on restart, and a
    logged-out token would be accepted again until it expires. Identity's own table has them
    all: a marker key, set after each copy to the Redis server's `run_id`, tells whether this
    very Redis run holds them. A restart changes the run id, so a Redis that came back from an
    older snapshot (marker included, later revocations missing) is refilled too.
    """
    marker = f"{ctx.settings.redis_prefix}:revoked-synced"
    redis: Any = ctx.shared.redis
    assert redis is not None

    async def keep(stop: asyncio.Event) -> None:
        deps = ctx.deps
        while not stop.is_set():
            try:
                run_id = str((await redis.info("server"))["run_id"]).encode()
                if await redis.get(marker) != run_id:
                    restored = await restore_revocations(deps)
                    await redis.set(marker, run_id)
                    log.info("revocations copied to the shared store", revocations=restored)
            except Exception as exc:
                log.warning("shared revocation check failed", error=f"{type(exc).__name__}: {exc}")
            await wait_any(stop, timeout=deps.settings.identity_revocation_check_seconds)

    return keep


MODULE = ServiceModule(
    name="identity",
    migrations=MigrationHistory(Path(__file__).parent / "migrations", "alembic_version_identity"),
    dependencies=build_deps,
    router=router,
    handlers={
        # The credential replica, kept from accounts' `user.*` events.
        UserCreated: handlers.user_created,
        UserUpdated: handlers.user_updated,
        UserDeleted: handlers.user_deleted,
    },
    on_start=start,
    background=background,
)
