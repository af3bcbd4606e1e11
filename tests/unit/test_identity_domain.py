"""Identity's rules without a database: replica ordering, key clashes, scopes, secrets, throttle."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mercato.identity.domain import (
    Credential,
    ThrottlePolicy,
    after_failure,
    check_client_id,
    check_scopes,
    digest,
    grant_scopes,
    login_key,
    new_secret,
    parse_scope,
    release_keys,
    replicate,
    secret_matches,
    tombstone,
    wait_left,
)
from mercato.platform.errors import RuleBroken

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def cred(version: int = 1, **changes: object) -> Credential:
    base = Credential(
        user_id="u1",
        username="jane",
        email="Jane@example.com",
        password_hash="$argon2id$one",
        roles=("user",),
        status="active",
        version=version,
        changed_at=T0 + timedelta(seconds=version),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_first_event_is_applied() -> None:
    change = replicate(None, cred())
    assert change.apply and not change.end_sessions


@pytest.mark.parametrize("incoming", [1, 2])
def test_an_older_or_repeated_version_never_overwrites(incoming: int) -> None:
    current = cred(2, username="newname")
    change = replicate(current, cred(incoming, username="oldname"))
    assert not change.apply and change.state == current


def test_out_of_order_updates_end_on_the_newest_state() -> None:
    v2, v3 = cred(2, email="two@example.com"), cred(3, email="three@example.com")
    state = None
    for event in (v3, v2):  # delivered backwards
        change = replicate(state, event)
        if change.apply:
            state = change.state
    assert state == v3


@pytest.mark.parametrize(
    ("incoming", "ends"),
    [
        (cred(2, password_hash="$argon2id$two"), True),
        (cred(2, status="disabled"), True),
        (tombstone("u1", 2, T0), True),
        (cred(2, email="other@example.com"), False),
        (cred(2, roles=("admin", "user")), False),
    ],
)
def test_sessions_end_on_password_change_disable_or_delete(
    incoming: Credential, ends: bool
) -> None:
    assert replicate(cred(1), incoming).end_sessions is ends


def test_a_deleted_user_cannot_log_in_and_holds_no_names() -> None:
    gone = tombstone("u1", 5, T0)
    assert not gone.can_log_in
    assert gone.username_key is None and gone.email_key is None
    # An older user.updated delivered late does not bring them back.
    assert not replicate(gone, cred(4)).apply


def test_login_key_folds_case_and_unicode_forms() -> None:
    assert login_key("  A@X.com ") == login_key("a@x.com")
    assert login_key("Ärger") == login_key("ärger")
    assert login_key("ﬁsh") == login_key("fish")  # NFKC: the ligature is two letters


def test_key_clash_goes_to_the_later_change() -> None:
    stale = cred(1, user_id="a", username="bob")  # renamed away later, event not yet applied
    newer = replace(
        cred(1, user_id="b", username="bob", email="b@example.com"),
        changed_at=T0 + timedelta(hours=1),
    )
    holder, claimant = release_keys(stale, newer)
    assert holder.username_key is None and holder.email_key == stale.email_key
    assert claimant == newer
    # Delivered the other way round, the same user keeps the name.
    holder2, claimant2 = release_keys(newer, stale)
    assert holder2 == newer and claimant2.username_key is None


def test_scope_parsing_and_granting() -> None:
    assert parse_scope(None) is None and parse_scope("  ") is None
    assert parse_scope("a b  a") == ["a", "b"]
    with pytest.raises(RuleBroken):
        parse_scope('bad"scope')
    assert grant_scopes(None, ["catalog.read"]) == ["catalog.read"]
    assert grant_scopes(["catalog.read"], ["catalog.read", "x"]) == ["catalog.read"]
    with pytest.raises(RuleBroken):
        grant_scopes(["mercato.admin"], ["catalog.read"])
    with pytest.raises(RuleBroken):
        check_scopes(["has space"])


@pytest.mark.parametrize("client_id", ["ab", "has:colon", "has space", "-lead", "mercato-web"])
def test_bad_client_ids_are_refused(client_id: str) -> None:
    with pytest.raises(RuleBroken):
        check_client_id(client_id)


def test_secrets_are_256_bit_and_compared_by_digest() -> None:
    secret = new_secret()
    assert len(secret) >= 43 and secret != new_secret()
    stored = digest(secret)
    assert secret_matches(stored, secret)
    assert not secret_matches(stored, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert not secret_matches(None, secret)


@given(st.integers(min_value=0, max_value=200))
def test_throttle_delay_grows_and_is_capped(failures: int) -> None:
    policy = ThrottlePolicy(free=5, base=1.0, maximum=900.0, forget_after=3600)
    delay = policy.delay_after(failures)
    assert 0 <= delay <= 900
    assert policy.delay_after(failures + 1) >= delay
    assert (delay == 0) is (failures <= 5)


def test_throttle_locks_after_free_failures_and_forgets_old_ones() -> None:
    policy = ThrottlePolicy(free=2, base=10.0, maximum=100.0, forget_after=60)
    state = None
    for _ in range(2):
        state = after_failure(policy, state, 1000.0)
        assert wait_left(state, 1000.0) == 0
    state = after_failure(policy, state, 1000.0)
    assert wait_left(state, 1000.0) == 10
    state = after_failure(policy, state, 1000.0)
    assert wait_left(state, 1000.0) == 20
    assert after_failure(policy, state, 2000.0).failures == 1  # an hour-old count restarts


def test_a_free_failure_locks_out_no_attempt_whose_clock_was_read_earlier() -> None:
    policy = ThrottlePolicy(free=3, base=600.0, maximum=900.0, forget_after=3600)
    state = None
    for at in (1000.0, 1000.2, 1000.4):
        state = after_failure(policy, state, at)
    # A concurrent attempt read the clock at 1000.3 and reached the counter after the third.
    assert wait_left(state, 1000.3) == 0
    assert wait_left(after_failure(policy, state, 1000.3), 1000.3) == 600
