"""Bad input to identity: wrong types, missing fields, oversized bodies, unicode and e-mail case.
Always a clear 4xx, never a 500 and never an echoed password."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import (
    USER_PASSWORD,
    Stack,
    admin,
    embedded_settings,
    eventually,
    identity_knows,
    stack,
)

LOGIN = "/api/v1/auth/login"
SECRET = "Secret-Password-123"


@pytest.fixture
async def s(data_dir: Path) -> AsyncIterator[Stack]:
    async with stack(embedded_settings(data_dir), ["accounts", "identity"]) as running:
        yield running


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "username_or_email"),
        ({"username_or_email": 123, "password": SECRET}, "username_or_email"),
        ({"username_or_email": "jane", "password": None}, "password"),
        ({"username_or_email": "jane", "password": [SECRET]}, "password"),
        (
            {"username_or_email": "jane", "password": SECRET, "remember_me": "perhaps"},
            "remember_me",
        ),
        ({"username_or_email": "jane", "password": SECRET, "admin": True}, "admin"),
        ({"username_or_email": "", "password": SECRET}, "username_or_email"),
        ({"username_or_email": "x" * 1000, "password": SECRET}, "username_or_email"),
    ],
)
async def test_bad_login_bodies_are_422_naming_the_field(
    s: Stack, body: dict[str, Any], field: str
) -> None:
    answer = await s.client.post(LOGIN, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert field in [e["loc"][-1] for e in answer.json()["errors"]]
    assert SECRET not in answer.text


async def test_non_json_and_broken_json_are_4xx(s: Stack) -> None:
    for content, kind in (
        (b"username_or_email=jane&password=x", "application/x-www-form-urlencoded"),
        (b'{"username_or_email": "jane", ', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
    ):
        answer = await s.client.post(LOGIN, content=content, headers={"Content-Type": kind})
        assert 400 <= answer.status_code < 500, answer.text


@pytest.mark.parametrize(
    "path", [LOGIN, "/api/v1/auth/refresh", "/oauth/token", "/api/v1/admin/clients"]
)
async def test_bodies_over_one_mib_are_413(s: Stack, path: str) -> None:
    big = b"a" * (1024 * 1024 + 1)
    answer = await s.client.post(path, content=big, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.headers["content-type"] == "application/problem+json"


async def register(s: Stack, username: str, email: str) -> None:
    form = {
        "username": username,
        "email": email,
        "password": USER_PASSWORD,
        "confirm_password": USER_PASSWORD,
    }
    assert (await s.client.post("/api/v1/accounts/register", json=form)).status_code == 201
    await eventually(lambda: identity_knows(s, username), what="replica")


async def test_unicode_username_logs_in_whatever_its_case(s: Stack) -> None:
    # One script per name (mixed scripts are refused as look-alikes): Greek, with its final
    # sigma, whose case folding is not a simple lower().
    await register(s, "Ψυχής_Ω", "u@example.com")
    for who in ("Ψυχής_Ω", "ψυχής_ω", "ΨΥΧΉΣ_Ω", " ψυχής_ω "):
        answer = await s.client.post(
            LOGIN, json={"username_or_email": who, "password": USER_PASSWORD}
        )
        assert answer.status_code == 200, f"{who}: {answer.text}"


async def test_email_case_names_one_account(s: Stack) -> None:
    await register(s, "alice", "A@x.com")
    for who in ("A@x.com", "a@x.com", "A@X.COM"):
        answer = await s.client.post(
            LOGIN, json={"username_or_email": who, "password": USER_PASSWORD}
        )
        assert answer.status_code == 200, f"{who}: {answer.text}"
    form = {
        "username": "other",
        "email": "a@X.com",
        "password": USER_PASSWORD,
        "confirm_password": USER_PASSWORD,
    }
    assert (await s.client.post("/api/v1/accounts/register", json=form)).status_code == 409


async def test_unknown_user_and_wrong_password_get_the_same_answer(s: Stack) -> None:
    await register(s, "bob", "bob@example.com")
    wrong = await s.client.post(LOGIN, json={"username_or_email": "bob", "password": "Nope-123456"})
    unknown = await s.client.post(
        LOGIN, json={"username_or_email": "nobody", "password": "Nope-123456"}
    )
    assert wrong.status_code == unknown.status_code == 401
    strip = {"correlation_id"}
    assert {k: v for k, v in wrong.json().items() if k not in strip} == {
        k: v for k, v in unknown.json().items() if k not in strip
    }


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "scopes": ["has space"]},
        {"name": "x", "scopes": ["ok"], "token_budget_per_hour": 0},
        {"name": "x", "scopes": ["ok"], "grant_types": ["implicit"]},
        {"name": "x", "scopes": ["ok"], "client_id": "has:colon"},
        {"name": "", "scopes": []},
        {"name": "x", "scopes": "catalog.read"},
        {"scopes": []},
    ],
)
async def test_bad_client_registrations_are_422(s: Stack, body: dict[str, Any]) -> None:
    boss = await admin(s)
    answer = await s.client.post("/api/v1/admin/clients", headers=boss.headers, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


async def test_odd_token_endpoint_input_is_never_a_500(s: Stack) -> None:
    for content, headers in (
        (b"grant_type=\xff\xfe", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"%%%", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"grant_type=client_credentials", {"Authorization": "Basic"}),
        (
            b"grant_type=client_credentials",
            {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic Og=="},
        ),
        (
            b"grant_type=refresh_token&refresh_token=x&client_id=mercato-web",
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
    ):
        answer = await s.client.post("/oauth/token", content=content, headers=headers)
        assert 400 <= answer.status_code < 500, answer.text
        assert "error" in answer.json()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.dictionaries(
        st.sampled_from(["username_or_email", "password", "remember_me", "refresh_token"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.text(max_size=50),
            st.lists(st.text(max_size=5), max_size=2),
        ),
    )
)
async def test_random_auth_bodies_never_500(s: Stack, body: dict[str, Any]) -> None:
    for path in (LOGIN, "/api/v1/auth/refresh"):
        answer = await s.client.post(path, json=body)
        assert answer.status_code < 500, answer.text
