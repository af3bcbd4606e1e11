"""Accounts' rules, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mercato.accounts.domain import (
    ProfileChange,
    RuleBroken,
    User,
    apply_change,
    check_password,
    check_roles,
    normalize_email,
    normalize_username,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "password",
    ["short1A", "aaaaaaaaaaaa", "AAAAAAAAAAAA", "123456789012", "!!!!!!!!!!!!", "x" * 257],
)
def test_weak_passwords_are_refused(password: str) -> None:
    with pytest.raises(RuleBroken) as caught:
        check_password(password)
    assert caught.value.field == "password"


@pytest.mark.parametrize("password", ["abcdefghi1", "Correct horse", "ÄÖÜäöüßxyz1"])
def test_mixed_passwords_of_ten_characters_pass(password: str) -> None:
    check_password(password)


def test_password_equal_to_the_username_is_refused() -> None:
    with pytest.raises(RuleBroken):
        check_password("Jane.Doe-1", username="jane.doe-1")


def test_usernames_are_nfkc_normalized_and_case_folded() -> None:
    assert normalize_username("  Ｊｏｓé_1 ") == ("José_1", "josé_1")
    assert normalize_username("Ärger")[1] == normalize_username("äRGER")[1]


@pytest.mark.parametrize("raw", ["ab", "x" * 33, "has space", "a@b", "-dash", ".dot", "tab\tx"])
def test_bad_usernames_are_refused(raw: str) -> None:
    with pytest.raises(RuleBroken) as caught:
        normalize_username(raw)
    assert caught.value.field == "username"


def test_email_case_makes_one_account() -> None:
    assert normalize_email("A@X.com")[1] == normalize_email("a@x.COM")[1]
    with pytest.raises(RuleBroken):
        normalize_email("not-an-email")


def test_roles_always_keep_user_and_refuse_unknown() -> None:
    assert check_roles(["admin"]) == ["admin", "user"]
    assert check_roles([]) == ["user"]
    with pytest.raises(RuleBroken):
        check_roles(["root"])


def user() -> User:
    return User(
        id="u1",
        username="jane",
        email="jane@example.com",
        display_name=None,
        password_hash="h",
        roles=["user"],
        status="active",
        version=1,
        created_at=NOW,
        updated_at=NOW,
    )


def test_a_change_bumps_the_version_once_and_names_the_fields() -> None:
    later = NOW + timedelta(minutes=1)
    updated, changed = apply_change(
        user(), ProfileChange(display_name="Jane", email="j@example.com"), later
    )
    assert changed == ["display_name", "email"]
    assert updated.version == 2 and updated.updated_at == later


def test_no_op_change_keeps_the_version() -> None:
    same, changed = apply_change(user(), ProfileChange(username="jane"), NOW)
    assert changed == [] and same.version == 1


def test_a_status_change_is_named_and_the_same_status_changes_nothing() -> None:
    later = NOW + timedelta(minutes=1)
    disabled, changed = apply_change(user(), ProfileChange(status="disabled"), later)
    assert changed == ["status"] and disabled.status == "disabled" and disabled.version == 2
    again, changed = apply_change(disabled, ProfileChange(status="disabled"), later)
    assert changed == [] and again is disabled
