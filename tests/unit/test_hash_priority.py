"""The password hashing pool: logins go before registrations, and a full line is refused at once
with a `Retry-After` instead of growing."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait

import pytest

from mercato.platform import passwords
from mercato.platform.http_errors import problem_headers
from mercato.platform.passwords import LOGIN, REGISTER, HashingBusy, PriorityPool

TIMEOUT = 30


@pytest.fixture
def blocked() -> Iterator[tuple[PriorityPool, threading.Event]]:
    """A one-worker pool whose worker is busy until the event is set (so jobs queue up)."""
    pool = PriorityPool(workers=1, max_waiting=3)
    running, release = threading.Event(), threading.Event()

    def hold() -> None:
        running.set()
        release.wait(TIMEOUT)

    pool.submit(REGISTER, hold)
    assert running.wait(TIMEOUT)
    yield pool, release
    release.set()


def recorder(done: list[str], name: str) -> Callable[[], str]:
    def job() -> str:
        done.append(name)
        return name

    return job


def test_waiting_logins_run_before_waiting_registrations(
    blocked: tuple[PriorityPool, threading.Event],
) -> None:
    pool, release = blocked
    done: list[str] = []
    futures: list[Future[str]] = [
        pool.submit(REGISTER, recorder(done, "register-1")),
        pool.submit(REGISTER, recorder(done, "register-2")),
        pool.submit(LOGIN, recorder(done, "login-1")),
        pool.submit(REGISTER, recorder(done, "register-3")),
        pool.submit(LOGIN, recorder(done, "login-2")),
    ]
    assert pool.waiting(LOGIN) == 2 and pool.waiting(REGISTER) == 3
    release.set()
    wait(futures, timeout=TIMEOUT)
    assert done == ["login-1", "login-2", "register-1", "register-2", "register-3"]
    assert [f.result() for f in futures[:2]] == ["register-1", "register-2"]
    assert pool.waiting(LOGIN) == 0 and pool.waiting(REGISTER) == 0


def test_a_full_line_is_refused_with_retry_after_and_the_other_line_still_admits(
    blocked: tuple[PriorityPool, threading.Event],
) -> None:
    pool, release = blocked
    done: list[str] = []
    queued = [pool.submit(REGISTER, recorder(done, f"register-{i}")) for i in range(3)]
    with pytest.raises(HashingBusy) as refused:
        pool.submit(REGISTER, recorder(done, "one-too-many"))
    assert refused.value.status == 503
    # The answer's headers come from the web layer's mapping of the (plain) exception.
    headers = problem_headers(refused.value)
    assert headers is not None
    assert int(headers["Retry-After"]) >= 1
    # Registrations filling their line take no login's place.
    login = pool.submit(LOGIN, recorder(done, "login"))
    release.set()
    wait([*queued, login], timeout=TIMEOUT)
    assert "one-too-many" not in done and done[0] == "login"
    # Once the line drained, registrations are admitted again.
    assert pool.submit(REGISTER, recorder(done, "later")).result(TIMEOUT) == "later"


def test_a_job_whose_caller_left_is_skipped_and_errors_reach_the_caller(
    blocked: tuple[PriorityPool, threading.Event],
) -> None:
    pool, release = blocked
    done: list[str] = []
    abandoned = pool.submit(REGISTER, recorder(done, "abandoned"))
    assert abandoned.cancel()

    def broken() -> None:
        raise ValueError("boom")

    failing = pool.submit(LOGIN, broken)
    after = pool.submit(REGISTER, recorder(done, "after"))
    release.set()
    assert after.result(TIMEOUT) == "after"
    assert done == ["after"]
    assert isinstance(failing.exception(TIMEOUT), ValueError)


async def test_hash_and_verify_go_through_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real argon2id round trip, on a pool of this test's own.
    monkeypatch.setattr(passwords, "_pool", PriorityPool(workers=1, max_waiting=4))
    hashed = await passwords.hash_password("Correct-Horse-9")
    assert await passwords.verify_password(hashed, "Correct-Horse-9")
    assert not await passwords.verify_password(hashed, "Wrong-Horse-9")
    assert not await passwords.verify_password(None, "Correct-Horse-9")
