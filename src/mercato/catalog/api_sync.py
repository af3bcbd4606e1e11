"""Catalog's external-sync routes: the admin's trigger and status, and the entry points
integration calls with each page of provider products (see `catalog.contracts`)."""

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel

from mercato.catalog import sync
from mercato.catalog.contracts import (
    SYNC_SCOPE,
    ExternalBatchResult,
    ExternalProductBatch,
    SyncRunClaim,
    SyncRunFinish,
    SyncRunOut,
    SyncRunStart,
)
from mercato.platform.auth import Principal
from mercato.platform.service import ServiceContext


class Triggered(BaseModel):
    """The run an admin's trigger queued."""

    run_id: str


class SyncStatus(BaseModel):
    """The newest runs and when the next scheduled one is due (as integration reported)."""

    runs: list[SyncRunOut]
    next_run_at: datetime | None


def build_sync_router(ctx: ServiceContext) -> APIRouter:
    """The sync routes, bound to catalog's context."""
    router = APIRouter(tags=["catalog sync"])
    Admin = Annotated[Principal, Depends(ctx.auth.require_admin)]
    Syncer = Annotated[Principal, Depends(ctx.auth.require_scope(SYNC_SCOPE))]

    @router.post("/api/v1/sync/trigger", status_code=status.HTTP_202_ACCEPTED)
    async def trigger(caller: Admin) -> Triggered:
        """Ask for an external product sync now; integration's sync job picks it up."""
        return Triggered(run_id=await sync.trigger_sync(ctx.uow, caller.sub))

    @router.get("/api/v1/sync/status")
    async def sync_status(_: Admin) -> SyncStatus:
        """The last runs with their counts."""
        runs, next_run_at = await sync.sync_status(ctx.database)
        return SyncStatus(runs=runs, next_run_at=next_run_at)

    @router.post("/api/v1/sync/runs/claim", response_model=SyncRunOut)
    async def claim(_: Syncer, body: SyncRunClaim) -> Response | SyncRunOut:
        """Take the oldest queued run (200), or 204 when none waits."""
        run = await sync.claim_run(ctx.uow, body.source, body.next_run_at)
        if run is None:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        return run

    @router.post("/api/v1/sync/runs", status_code=status.HTTP_201_CREATED)
    async def start(caller: Syncer, body: SyncRunStart) -> SyncRunOut:
        """Start a run now (a scheduled tick)."""
        return await sync.start_run(ctx.uow, body, caller.client_id or caller.sub)

    @router.post("/api/v1/sync/runs/{run_id}/products")
    async def products(_: Syncer, run_id: UUID, body: ExternalProductBatch) -> ExternalBatchResult:
        """Upsert one page of provider products by `(source, external_id)`."""
        return await sync.upsert_external_products(ctx.uow, str(run_id), body.products)

    @router.post("/api/v1/sync/runs/{run_id}/finish")
    async def finish(_: Syncer, run_id: UUID, body: SyncRunFinish) -> SyncRunOut:
        """Close a run as succeeded or failed."""
        return await sync.finish_run(ctx.uow, str(run_id), body)

    return router
