"""Admin HTTP endpoints of the backbone, under /api/v1/events/{service}/…"""

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from mercato.platform.db import Database
from mercato.platform.errors import NotFound
from mercato.platform.events.admin import (
    DeadLetterOut,
    EventStats,
    Redeliver,
    event_stats,
    list_dead_letters,
    replay_dead_letter,
)
from mercato.platform.events.log import EventFilter, LoggedEvent, list_events
from mercato.platform.pagination import Page, PageDep


def events_router(
    databases: Mapping[str, Database],
    redeliver: Redeliver,
    require_admin: Callable[..., Any],
) -> APIRouter:
    """Routes for the services whose databases this process holds."""
    router = APIRouter(
        prefix="/api/v1/events", tags=["events"], dependencies=[Depends(require_admin)]
    )

    def database_of(service: str) -> Database:
        database = databases.get(service)
        if database is None:
            raise NotFound(f"no service {service!r} here")
        return database

    DatabaseDep = Annotated[Database, Depends(database_of)]

    @router.get("/{service}/dead-letters", response_model=Page[DeadLetterOut])
    async def dead_letters(
        database: DatabaseDep,
        page: PageDep,
        include_replayed: Annotated[bool, Query()] = False,
    ) -> Page[DeadLetterOut]:
        """Events a consumer of this service gave up on."""
        return await list_dead_letters(
            database, skip=page.skip, limit=page.limit, include_replayed=include_replayed
        )

    @router.post("/{service}/dead-letters/{dead_letter_id}/replay", status_code=202)
    async def replay(database: DatabaseDep, dead_letter_id: str) -> dict[str, str]:
        """Deliver a dead letter to its consumer again."""
        event_id = await replay_dead_letter(database, dead_letter_id, redeliver)
        return {"id": dead_letter_id, "event_id": event_id, "status": "requeued"}

    @router.get("/{service}/events", response_model=Page[LoggedEvent])
    async def events(
        database: DatabaseDep,
        page: PageDep,
        event_type: Annotated[str | None, Query(alias="type", max_length=100)] = None,
        subject: Annotated[str | None, Query(max_length=100)] = None,
        correlation_id: Annotated[str | None, Query(max_length=128)] = None,
    ) -> Page[LoggedEvent]:
        """Events this service published, newest first (sent ones are kept a week by default);
        payload fields marked secret are masked."""
        flt = EventFilter(type=event_type, subject=subject, correlation_id=correlation_id)
        return await list_events(database, flt, skip=page.skip, limit=page.limit)

    @router.get("/{service}/stats", response_model=EventStats, status_code=status.HTTP_200_OK)
    async def stats(database: DatabaseDep) -> EventStats:
        """Outbox backlog, oldest unsent age, inbox size and dead-letter count."""
        return await event_stats(database)

    return router
