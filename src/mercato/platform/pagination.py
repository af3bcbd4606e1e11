"""List pagination as DESIGN §2 says: `skip`, `limit` (≤ 500) and a `{items, total, ...}` page."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel

T = TypeVar("T")

MAX_LIMIT = 500


class PageParams(BaseModel):
    """Where a page starts and how long it is."""

    skip: int = 0
    limit: int = 50


def page_params(
    skip: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
) -> PageParams:
    """FastAPI dependency reading `skip` and `limit`."""
    return PageParams(skip=skip, limit=limit)


PageDep = Annotated[PageParams, Depends(page_params)]


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    total: int
    skip: int
    limit: int
