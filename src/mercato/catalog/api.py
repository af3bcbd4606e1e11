"""Catalog's product routes (DESIGN §2): parse, call a use case, shape the answer."""

from collections.abc import AsyncIterator
from datetime import datetime
from operator import attrgetter
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict

from mercato.catalog import service
from mercato.catalog.contracts import EXPORT_CSV, EXPORT_CSV_HEADER
from mercato.catalog.domain import Product
from mercato.catalog.export_rows import LINE_END
from mercato.catalog.store import ProductFilter
from mercato.platform.auth import Principal
from mercato.platform.errors import Forbidden, Invalid, Unauthorized
from mercato.platform.http_inputs import ExactJsonRoute
from mercato.platform.money import Money
from mercato.platform.openapi import json_examples
from mercato.platform.pagination import Page, PageDep
from mercato.platform.service import ServiceContext

READ_SCOPE = "catalog.read"
NDJSON = "application/x-ndjson"
Stock = Annotated[int, Field(ge=0, le=1_000_000_000, strict=True)]
Price = Annotated[Money, Field(ge=0)]


class ProductIn(BaseModel):
    """A new product (POST), or the whole new state of one (PUT)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    author: str | None = Field(default=None, max_length=200)
    category: str | None = Field(default=None, max_length=100)
    price: Price
    stock: Stock = 0
    owner_id: UUID | None = None
    active: Annotated[bool, Field(strict=True)] = True


def _omit_null(schema: dict[str, Any]) -> None:
    """Document an optional field as its type alone: it may be left out, not set to null.

    (`SkipJsonSchema[None]` would do it too, but makes the field a union whose validation
    errors name the union's branches instead of the field.)
    """
    schema.pop("default", None)
    options = schema.pop("anyOf", [])
    kept = [option for option in options if option.get("type") != "null"]
    if len(kept) == 1:
        schema.update(kept[0])
    elif kept:
        schema["anyOf"] = kept


class ProductPatch(BaseModel):
    """Fields to change; `{"active": false}` withdraws a product from sale."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    # Required fields may be left out but not set to null: `patch_product` answers a null with a
    # 422 naming them, and the schema does not offer null for them (`_omit_null`).
    name: str | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra=_omit_null
    )
    description: str | None = Field(default=None, max_length=5000)
    author: str | None = Field(default=None, max_length=200)
    category: str | None = Field(default=None, max_length=100)
    price: Price | None = Field(default=None, json_schema_extra=_omit_null)
    stock: Stock | None = Field(default=None, json_schema_extra=_omit_null)
    owner_id: UUID | None = None
    active: Annotated[bool, Field(strict=True)] | None = Field(
        default=None, json_schema_extra=_omit_null
    )


REQUIRED = ("name", "price", "stock", "active")


class ProductOut(BaseModel):
    """A product as the API answers it."""

    id: str
    name: str
    description: str | None
    author: str | None
    category: str | None
    price: Money
    currency: str
    stock: int
    active: bool
    status: Literal["available", "unavailable"]
    owner_id: str | None
    external_id: str | None
    source: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, product: Product) -> "ProductOut":
        """The public view of a product."""
        return cls(
            id=product.id,
            name=product.name,
            description=product.description,
            author=product.author,
            category=product.category,
            price=product.price,
            currency=product.currency,
            stock=product.stock,
            active=product.active,
            status="available" if product.available else "unavailable",
            owner_id=product.owner_id,
            external_id=product.external_id,
            source=product.source,
            created_at=product.created_at,
            updated_at=product.updated_at,
        )


# The export's line: ProductOut's fields as a TypedDict, so pydantic serializes each product
# straight from its attributes instead of building a model first (7.5 -> 4 µs a product, a
# million per export: bench/export.py). The bytes are ProductOut's (tests/unit/test_catalog_*).
_LINE = TypeAdapter(
    TypedDict(  # type: ignore[operator]
        "ProductLine",
        {
            name: Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            for name, info in ProductOut.model_fields.items()
        },
    )
)
_LINE_NAMES = tuple(ProductOut.model_fields)
_line_values = attrgetter(*_LINE_NAMES)


def export_line(product: Product) -> bytes:
    """One NDJSON line of the export: the product as `ProductOut` serializes it, and a newline."""
    return _LINE.dump_json(dict(zip(_LINE_NAMES, _line_values(product), strict=True))) + b"\n"


_PAGE = TypeAdapter(Page[ProductOut])


def wants_csv(accept: str) -> bool:
    """Whether an Accept header prefers `text/csv` to NDJSON (NDJSON on a tie or without one)."""
    weights: dict[str, float] = {}
    for part in accept.lower().split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = next((p[2:] for p in params if p.startswith("q=")), "1")
        try:
            weights[media] = float(q)
        except ValueError:
            continue
    # RFC 9110 §12.5.1: the most specific range naming a type gives its weight.
    ndjson_q = weights.get(NDJSON, weights.get("application/*", weights.get("*/*", 0.0)))
    return weights.get(EXPORT_CSV, 0.0) > ndjson_q


async def csv_chunks(pages: AsyncIterator[str]) -> AsyncIterator[bytes]:
    """The CSV body: `EXPORT_CSV_HEADER`'s row, then `pages` as they come, UTF-8."""
    header = ",".join(EXPORT_CSV_HEADER) + LINE_END  # plain words: nothing to quote
    async for text in pages:
        yield (header + text).encode()
        header = ""
    if header:
        yield header.encode()  # no product at all: the header alone


def _values(body: BaseModel, fields: set[str] | None = None) -> dict[str, Any]:
    values = body.model_dump(include=fields)
    if values.get("owner_id") is not None:
        values["owner_id"] = str(values["owner_id"])
    return values


def build_router(ctx: ServiceContext) -> APIRouter:
    """The product routes, bound to catalog's context."""
    # Exact JSON numbers: a price of 19.9999999999999999 is refused, not rounded to 20.00.
    router = APIRouter(tags=["catalog"], route_class=ExactJsonRoute)
    Admin = Annotated[Principal, Depends(ctx.auth.require_admin)]
    Reader = Annotated[Principal, Depends(ctx.auth.require_scope(READ_SCOPE))]

    @router.get("/api/v1/products", response_model=Page[ProductOut])
    async def list_products(
        request: Request,
        page: PageDep,
        q: Annotated[str | None, Query(max_length=200)] = None,
        category: Annotated[str | None, Query(max_length=100)] = None,
        available: bool | None = None,
        source: Annotated[str | None, Query(max_length=32)] = None,
        sort: Literal["created_at", "-created_at"] = "created_at",
        include_inactive: bool = False,
    ) -> Response:
        """Products on the shelf (withdrawn ones too for admins and `catalog.read` clients)."""
        if include_inactive:
            caller = await ctx.auth.optional(request)
            if caller is None:
                raise Unauthorized("include_inactive needs an admin or a catalog.read token")
            if not (caller.is_admin or caller.has_scope(READ_SCOPE)):
                raise Forbidden("include_inactive needs an admin or a catalog.read token")
        flt = ProductFilter(
            q=q or None,
            category=category,
            available=available,
            source=source,
            include_inactive=include_inactive,
            newest_first=sort == "-created_at",
        )
        found, total = await service.list_products(ctx.database, flt, page.skip, page.limit)
        body = Page[ProductOut](
            items=[ProductOut.of(p) for p in found], total=total, skip=page.skip, limit=page.limit
        )
        # Serialized once here rather than validated again by FastAPI: listings are the
        # hottest read path (bench/catalog.py).
        return Response(_PAGE.dump_json(body), media_type="application/json")

    @router.get(
        "/api/v1/products/export",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {NDJSON: {}, EXPORT_CSV: {}},
                "description": (
                    "one product per line (NDJSON), or with `Accept: text/csv` a header row and"
                    " one row per product in DESIGN §5's columns"
                ),
                "headers": {
                    "X-Total-Count": {
                        "description": "how many products there were as the export began",
                        "schema": {"type": "integer"},
                    }
                },
            }
        },
    )
    async def export(
        _: Reader,
        request: Request,
        neutralise_formulas: Annotated[
            bool, Query(description="text/csv only: `'` before cells starting a formula")
        ] = True,
    ) -> StreamingResponse:
        """Every product, withdrawn ones too, as NDJSON (or CSV) in `created_at, id` order.

        `X-Total-Count` says how many products there were when the export began (so a reader
        can show its progress); products created or deleted meanwhile may make the stream
        a little longer or shorter. With `Accept: text/csv` the rows come in the export job's
        format, formatted by the database (a million products cost no parsing on either side).
        """
        total = await service.count_products(ctx.database)
        headers = {"X-Total-Count": str(total), "Vary": "Accept"}
        if wants_csv(request.headers.get("accept", "")):
            rows = service.export_csv_pages(ctx.database, neutralise=neutralise_formulas)
            return StreamingResponse(
                csv_chunks(rows), media_type=f"{EXPORT_CSV}; charset=utf-8", headers=headers
            )

        async def lines() -> AsyncIterator[bytes]:
            # One chunk per page: a send per product would cost more than the product.
            async for page in service.export_pages(ctx.database):
                yield b"".join(export_line(p) for p in page)

        return StreamingResponse(lines(), media_type=NDJSON, headers=headers)

    @router.get("/api/v1/products/{product_id}")
    async def get_product(product_id: UUID) -> ProductOut:
        """One product (withdrawn ones too: orders link to them)."""
        return ProductOut.of(await service.get_product(ctx.uow, str(product_id)))

    @router.post(
        "/api/v1/products",
        status_code=status.HTTP_201_CREATED,
        openapi_extra=json_examples(
            a_book={
                "name": "Book store microservice architecture",
                "author": "Mojbaba",
                "category": "books",
                "price": "20.00",
                "stock": 10,
            }
        ),
    )
    async def create_product(_: Admin, body: ProductIn) -> ProductOut:
        """Add a product (emits `product.upserted`)."""
        return ProductOut.of(await service.create_product(ctx.uow, _values(body)))

    @router.put("/api/v1/products/{product_id}")
    async def put_product(_: Admin, product_id: UUID, body: ProductIn) -> ProductOut:
        """Replace a product's editable fields (omitted optional ones back to defaults)."""
        product = await service.update_product(
            ctx.uow, str(product_id), _values(body), replace_all=True
        )
        return ProductOut.of(product)

    @router.patch("/api/v1/products/{product_id}")
    async def patch_product(_: Admin, product_id: UUID, body: ProductPatch) -> ProductOut:
        """Change some fields; `{"active": false}` withdraws the product from sale."""
        nulled = [f for f in REQUIRED if f in body.model_fields_set and getattr(body, f) is None]
        if nulled:
            raise Invalid(
                f"{', '.join(nulled)} cannot be null",
                errors=[
                    {"loc": ["body", f], "msg": "may not be null", "type": "value_error"}
                    for f in nulled
                ],
            )
        changes = _values(body, set(body.model_fields_set))
        return ProductOut.of(await service.update_product(ctx.uow, str(product_id), changes))

    @router.delete("/api/v1/products/{product_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def delete_product(_: Admin, product_id: UUID) -> Response:
        """Remove a product (emits `product.deleted`); 404 afterwards."""
        await service.delete_product(ctx.uow, str(product_id))
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router
