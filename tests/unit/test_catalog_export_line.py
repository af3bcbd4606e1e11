"""The export's fast line serializer writes exactly what `ProductOut` would."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from mercato.catalog.api import ProductOut, export_line
from mercato.catalog.domain import Product

WHEN = datetime(2026, 11, 24, 19, 20, 1, 123456, tzinfo=UTC)


def product(**changes: object) -> Product:
    values: dict[str, object] = {
        "id": "01a20e6b-0000-7000-8000-000000000001",
        "name": "Dune",
        "description": None,
        "author": None,
        "category": None,
        "price": Decimal("9.90"),
        "currency": "USD",
        "stock": 0,
        "active": True,
        "owner_id": None,
        "external_id": None,
        "source": "local",
        "version": 3,
        "created_at": WHEN,
        "updated_at": WHEN,
    }
    values.update(changes)
    return Product(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"stock": 7, "author": "Herbert", "category": "SF", "description": 'a "quoted", line\n'},
        {"name": "Dünë — 砂丘 🏜", "price": Decimal("1000000000.00"), "active": False},
        {"owner_id": "01a20e6b-0000-7000-8000-00000000000f", "external_id": "X-1", "source": "p"},
        {"price": Decimal("0.00"), "created_at": datetime(2026, 1, 1, tzinfo=UTC)},
    ],
)
def test_export_line_is_the_product_out_json(changes: dict[str, object]) -> None:
    item = product(**changes)
    line = export_line(item)
    assert line == ProductOut.of(item).model_dump_json().encode() + b"\n"
    assert "version" not in json.loads(line)
