"""The integration HTTP API (DESIGN §2): tokens, jobs, exports, external orders. All admin."""

# No `from __future__ import annotations`: the routes are declared inside integration_router()
# with a local dependency alias, which FastAPI must evaluate at definition time.

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict

from mercato.integration.domain import SYNC_EXTERNAL_PRODUCTS
from mercato.integration.service import IntegrationService
from mercato.integration.store import ExportFile
from mercato.platform.auth.deps import Authenticator
from mercato.platform.money import Money
from mercato.platform.pagination import Page, PageDep

JobName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]


class _ViewOut(BaseModel):
    """An answer read from a domain view's attributes: the model says what is shown (and the
    OpenAPI document), the view is never copied field by field."""

    model_config = ConfigDict(from_attributes=True)


class TokenStatusOut(_ViewOut):
    """One upstream's token state (never the token)."""

    has_token: bool
    expires_at: datetime | None
    renew_at: datetime | None
    requests_last_hour: int
    budget_per_hour: int
    last_error: str | None = None
    circuit_state: Literal["closed", "half_open", "open"] | None = None


class RunOut(_ViewOut):
    """One recorded run."""

    id: str
    job: str
    trigger: str
    status: str
    tick: datetime | None
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, int]
    output: str | None
    error: str | None


class JobOut(_ViewOut):
    """A job: schedule, whether it can run, last and next run."""

    name: str
    description: str
    schedule: str
    initial_delay_seconds: float
    enabled: bool
    disabled_reason: str | None
    next_run_at: datetime | None
    last_run: RunOut | None


class RunAccepted(BaseModel):
    """A run was queued."""

    run_id: str


class ExportOut(BaseModel):
    """An export file."""

    file_name: str
    rows: int
    size_bytes: int
    created_at: datetime
    run_id: str
    download_url: str

    @classmethod
    def of(cls, item: ExportFile) -> "ExportOut":
        """From a record."""
        return cls(**item.__dict__, download_url=f"/api/v1/exports/{item.file_name}")


class ExternalOrderOut(BaseModel):
    """An imported external order."""

    id: str
    source: str
    external_id: str
    status: str
    total: Money
    currency: str
    customer_email: str | None
    items: list[dict[str, Any]]
    placed_at: datetime | None
    imported_at: datetime
    updated_at: datetime


class SyncRunOut(BaseModel):
    """A product sync run as DESIGN §2's `GET /api/v1/sync/status` shows it."""

    id: str
    started_at: datetime | None
    finished_at: datetime | None
    status: str
    created: int
    updated: int
    unchanged: int
    failed: int
    error: str | None = None


class SyncStatusOut(BaseModel):
    """The product sync's last runs and next run."""

    runs: list[SyncRunOut]
    next_run_at: datetime | None


def integration_router(service: Callable[[], IntegrationService], auth: Authenticator) -> APIRouter:
    """The routes; every one needs an admin (401 anonymous, 403 otherwise)."""
    router = APIRouter(dependencies=[Depends(auth.require_admin)])

    def svc() -> IntegrationService:
        return service()

    Svc = Annotated[IntegrationService, Depends(svc)]

    @router.get("/api/v1/integration/token/status", tags=["integration"])
    async def token_status(s: Svc) -> dict[str, TokenStatusOut]:
        """Per upstream: whether a token is cached, when it expires and renews, the budget, and
        the state of its circuit breaker (`closed`, `half_open`, `open`; null without one)."""
        statuses = await s.token_status()
        return {name: TokenStatusOut.model_validate(st) for name, st in statuses.items()}

    @router.delete("/api/v1/integration/token", status_code=204, tags=["integration"])
    async def forget_tokens(
        s: Svc,
        upstream: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        """Forget cached tokens (of one upstream, or all): the next call fetches one."""
        await s.forget_tokens(upstream)
        return Response(status_code=204)

    @router.get("/api/v1/jobs", tags=["jobs"])
    async def list_jobs(s: Svc, page: PageDep) -> Page[JobOut]:
        """Each job: schedule, enabled or why not, last run, next run."""
        jobs = [JobOut.model_validate(v) for v in await s.list_jobs()]
        items = jobs[page.skip : page.skip + page.limit]
        return Page(items=items, total=len(jobs), skip=page.skip, limit=page.limit)

    @router.post("/api/v1/jobs/{name}/run", status_code=202, tags=["jobs"])
    async def run_job(s: Svc, name: JobName) -> RunAccepted:
        """Run a job now (queued for this installation's scheduler)."""
        return RunAccepted(run_id=await s.request_run(name))

    @router.get("/api/v1/jobs/{name}/runs", tags=["jobs"])
    async def job_runs(s: Svc, name: JobName, page: PageDep) -> Page[RunOut]:
        """The job's runs, newest first."""
        runs, total = await s.runs(name, page.skip, page.limit)
        return Page(
            items=[RunOut.model_validate(r) for r in runs], total=total, **page.model_dump()
        )

    @router.get("/api/v1/exports", tags=["exports"])
    async def exports(s: Svc, page: PageDep) -> Page[ExportOut]:
        """Export files, newest first."""
        files, total = await s.exports(page.skip, page.limit)
        return Page(items=[ExportOut.of(f) for f in files], total=total, **page.model_dump())

    @router.get(
        "/api/v1/exports/{file_name}",
        tags=["exports"],
        response_class=FileResponse,
        responses={200: {"content": {"text/csv": {}}}},
    )
    async def download(s: Svc, file_name: Annotated[str, Path(max_length=200)]) -> FileResponse:
        """Download an export file (only files the export job wrote)."""
        path = await s.export_path(file_name)
        return FileResponse(path, media_type="text/csv", filename=path.name)

    @router.get("/api/v1/external-orders", tags=["integration"])
    async def external_orders(
        s: Svc,
        page: PageDep,
        source: Annotated[str | None, Query(max_length=32)] = None,
    ) -> Page[ExternalOrderOut]:
        """Orders imported from external providers, newest first."""
        items, total = await s.external_orders(page.skip, page.limit, source)
        return Page(items=[ExternalOrderOut(**i) for i in items], total=total, **page.model_dump())

    @router.post("/api/v1/sync/trigger", status_code=202, tags=["sync"])
    async def sync_trigger(s: Svc) -> RunAccepted:
        """Start an external product sync (the `sync-external-products` job) now."""
        return RunAccepted(run_id=await s.request_run(SYNC_EXTERNAL_PRODUCTS))

    @router.get("/api/v1/sync/status", tags=["sync"])
    async def sync_status(s: Svc, limit: Annotated[int, Query(ge=1, le=100)] = 10) -> SyncStatusOut:
        """The external product sync's last runs (with counts) and its next run."""
        runs, _ = await s.runs(SYNC_EXTERNAL_PRODUCTS, 0, limit)
        job = next(j for j in await s.list_jobs() if j.name == SYNC_EXTERNAL_PRODUCTS)
        return SyncStatusOut(
            runs=[
                SyncRunOut(
                    id=r.id,
                    started_at=r.started_at,
                    finished_at=r.finished_at,
                    status=r.status,
                    error=r.error,
                    **{
                        k: r.counts.get(k, 0) for k in ("created", "updated", "unchanged", "failed")
                    },
                )
                for r in runs
            ],
            next_run_at=job.next_run_at,
        )

    return router
