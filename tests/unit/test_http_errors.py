"""The web layer's mapping of the platform's plain exceptions to problem+json answers."""

from __future__ import annotations

import json

import pytest

from mercato.orders.domain import LineProblem, PlacementRefused
from mercato.platform.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    RuleBroken,
    TooManyRequests,
    Unauthorized,
)
from mercato.platform.events.envelope import current_correlation_id
from mercato.platform.http_errors import (
    PROBLEM_JSON,
    domain_problem,
    problem_body,
    problem_headers,
)


@pytest.mark.parametrize(
    ("error", "status", "slug", "title"),
    [
        (DomainError("x"), 400, "bad-request", "Bad Request"),
        (NotFound("x"), 404, "not-found", "Not Found"),
        (Conflict("x"), 409, "conflict", "Conflict"),
        (Invalid("x"), 422, "validation-error", "Unprocessable Entity"),
        (Unauthorized(), 401, "unauthorized", "Unauthorized"),
        (Forbidden("x"), 403, "forbidden", "Forbidden"),
        (TooManyRequests("x", 3), 429, "too-many-requests", "Too Many Requests"),
    ],
)
def test_each_error_answers_its_status_type_and_title(
    error: DomainError, status: int, slug: str, title: str
) -> None:
    answer = domain_problem(error)
    assert answer.status_code == status
    assert answer.media_type == PROBLEM_JSON
    body = json.loads(answer.body)
    assert body["type"] == f"https://mercato.dev/problems/{slug}"
    assert body["title"] == title and body["status"] == status
    assert body["detail"] == error.detail


def test_headers_say_how_to_authenticate_and_when_to_retry() -> None:
    assert problem_headers(NotFound("gone")) is None
    assert problem_headers(Unauthorized()) == {"WWW-Authenticate": "Bearer"}
    assert problem_headers(Unauthorized("bad", challenge='Bearer error="invalid_token"')) == {
        "WWW-Authenticate": 'Bearer error="invalid_token"'
    }
    assert problem_headers(Forbidden("no", challenge="Bearer scope")) == {
        "WWW-Authenticate": "Bearer scope"
    }
    # At least one second: "0" would invite an immediate retry into the same refusal.
    assert problem_headers(TooManyRequests("slow down", 0)) == {"Retry-After": "1"}
    assert problem_headers(DomainError("busy", retry_after=7)) == {"Retry-After": "7"}


def test_a_subclass_may_name_its_own_title_and_type() -> None:
    class Teapot(DomainError):
        status = 418
        type_slug = "teapot"
        title = "Short and stout"

    body = json.loads(domain_problem(Teapot("no coffee")).body)
    assert body["title"] == "Short and stout"
    assert body["type"].endswith("/teapot")


def test_broken_rules_become_located_validation_errors() -> None:
    error = Invalid.of(RuleBroken("amount", "must be greater than 0"))
    assert error.detail == "amount: must be greater than 0"
    assert error.errors == [
        {"loc": ["body", "amount"], "msg": "must be greater than 0", "type": "value_error"}
    ]
    refused = PlacementRefused(
        [LineProblem(0, "items", "1 to 50 lines"), LineProblem(2, "quantity", "must be 1 to 9")]
    )
    lines = Invalid.of(*refused.rules(), detail=str(refused))
    assert lines.detail == str(refused)
    assert [e["loc"] for e in lines.errors or []] == [
        ["body", "items"],
        ["body", "items", 2, "quantity"],
    ]


def test_the_body_carries_the_correlation_id_and_the_errors() -> None:
    token = current_correlation_id.set("corr-7")
    try:
        body = problem_body(422, "bad", errors=[{"loc": ["body", "x"]}])
    finally:
        current_correlation_id.reset(token)
    assert body["correlation_id"] == "corr-7"
    assert body["errors"] == [{"loc": ["body", "x"]}]
    assert list(body)[:4] == ["type", "title", "status", "detail"]
