"""The OpenAPI document describes the error answers clients actually get."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.harness import admin, embedded_settings, stack

METHODS = {"get", "put", "post", "delete", "patch"}


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


async def test_every_operation_documents_its_errors(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir)) as s:
        document = (await s.client.get("/openapi.json")).json()
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    operations = _operations(document)
    assert len(operations) > 40
    for path, method, operation in operations:
        responses = operation["responses"]
        if path.startswith("/oauth/"):
            expected = {"application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}}
        else:
            expected = {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }
            if "422" in responses:
                assert responses["422"]["content"] == expected, (method, path)
        assert responses["default"]["content"] == expected, (method, path)


async def test_real_errors_match_the_documented_problem(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir)) as s:
        document = (await s.client.get("/openapi.json")).json()
        problem = document["components"]["schemas"]["Problem"]
        boss = await admin(s)
        answers = [
            await s.client.get("/api/v1/orders"),  # 401
            await s.client.get("/api/v1/products/00000000-0000-7000-8000-000000000000"),  # 404
            await s.client.post("/api/v1/products", headers=boss.headers, json={"name": ""}),
            await s.client.patch(
                "/api/v1/products/00000000-0000-7000-8000-000000000000",
                headers=boss.headers,
                json={"name": None},
            ),
            await s.client.patch(
                "/api/v1/products/00000000-0000-7000-8000-000000000000",
                headers=boss.headers,
                json={"stock": "many"},
            ),
        ]
    assert [a.status_code for a in answers] == [401, 404, 422, 422, 422]
    # Errors name the field, not the branches of an internal union.
    assert [e["loc"] for e in answers[-1].json()["errors"]] == [["body", "stock"]]
    for answer in answers:
        assert answer.headers["content-type"] == "application/problem+json"
        body = answer.json()
        assert set(problem["required"]) <= set(body) <= set(problem["properties"])
        assert body["status"] == answer.status_code


async def test_patch_fields_that_cannot_be_null_are_not_documented_as_nullable(
    data_dir: Path,
) -> None:
    async with stack(embedded_settings(data_dir), ["accounts", "identity", "catalog"]) as s:
        patch = (await s.client.get("/openapi.json")).json()["components"]["schemas"][
            "ProductPatch"
        ]["properties"]
    for field in ("name", "price", "stock", "active"):
        assert "null" not in repr(patch[field]), field
    assert "null" in repr(patch["description"])


async def test_method_not_allowed_lists_every_allowed_method(data_dir: Path) -> None:
    async with stack(embedded_settings(data_dir)) as s:
        answers = {
            path: await s.client.request("OPTIONS", path)
            for path in (
                "/api/v1/products",
                "/api/v1/products/00000000-0000-7000-8000-000000000000",
            )
        }
    collection, item = answers.values()
    assert collection.status_code == item.status_code == 405
    assert collection.headers["content-type"] == "application/problem+json"
    assert collection.headers["allow"] == "GET, POST"
    assert item.headers["allow"] == "DELETE, GET, PATCH, PUT"
