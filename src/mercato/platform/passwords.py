"""Password hashing with argon2id (argon2-cffi), always off the event loop, logins first.

A hash takes tens of milliseconds of CPU on purpose; running it on the loop would stall every
other request of the process for that long. The hashes run on a small pool of their own behind
a priority queue: a person waiting at the login form (`verify_password`) goes before a new
account's hash (`hash_password`), so a flood of anonymous registrations cannot starve logins.
Each priority waits in a bounded line; past it the caller gets `HashingBusy` (503 with
`Retry-After`, as problem+json) at once instead of a wait that grows without end.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mercato.platform.errors import DomainError

T = TypeVar("T")

# Lower runs first.
LOGIN = 0  # verifying a password someone is waiting on (login, current_password)
REGISTER = 1  # hashing a new password (registration, password change, bootstrap admin)
_PRIORITIES = (LOGIN, REGISTER)

# argon2-cffi's defaults follow RFC 9106's second recommendation (argon2id, 64 MiB, t=3).
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified when the user is unknown, so "no such user" costs as long as "wrong password";
    made at first need (a quarter second of hashing) instead of on every process's import."""
    return _hasher.hash("mercato-timing-equalizer")


class PasswordSettings(BaseSettings):
    """How many password jobs may wait, per priority, before callers are turned away."""

    model_config = SettingsConfigDict(
        env_prefix="MERCATO_", env_file=".env", extra="ignore", env_file_encoding="utf-8"
    )

    # Per priority, so registrations filling their line never take a login's place. 64 waiting
    # hashes on one core is a few seconds of work: beyond that an answer is better than a wait.
    password_queue_max: int = Field(default=64, ge=1, le=100_000)


class HashingBusy(DomainError):
    """Too many password jobs wait already; try again after `retry_after` seconds."""

    status = 503
    type_slug = "password-hashing-busy"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "too many password checks in progress; try again shortly",
            retry_after=max(1, retry_after),
        )


class PriorityPool:
    """Worker threads that take jobs lowest priority number first, in arrival order within one
    priority; at most `max_waiting` jobs of each priority wait (running ones not counted)."""

    def __init__(self, workers: int, max_waiting: int) -> None:
        self._workers = workers
        self._max_waiting = max_waiting
        self._jobs: queue.PriorityQueue[tuple[int, int, Callable[[], Any], Future[Any]]] = (
            queue.PriorityQueue()
        )
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._waiting = dict.fromkeys(_PRIORITIES, 0)
        self._threads: list[threading.Thread] = []
        # A running estimate of one job's seconds, for an honest `Retry-After`.
        self._job_seconds = 0.1

    def submit(self, priority: int, job: Callable[[], T]) -> Future[T]:
        """Queue `job`; `HashingBusy` when its priority's line is full. Never blocks."""
        future: Future[T] = Future()
        with self._lock:
            waiting = self._waiting[priority]
            if waiting >= self._max_waiting:
                ahead = sum(self._waiting[p] for p in _PRIORITIES if p <= priority)
                raise HashingBusy(math.ceil(ahead * self._job_seconds / self._workers))
            self._waiting[priority] = waiting + 1
            if len(self._threads) < self._workers:  # started on first use, not at import
                thread = threading.Thread(target=self._work, name="argon2", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._jobs.put((priority, next(self._order), job, future))
        return future

    def waiting(self, priority: int) -> int:
        """How many jobs of `priority` wait (for tests and metrics)."""
        with self._lock:
            return self._waiting[priority]

    def _work(self) -> None:
        while True:
            priority, _, job, future = self._jobs.get()
            with self._lock:
                self._waiting[priority] -= 1
            if not future.set_running_or_notify_cancel():
                continue  # its caller went away (client disconnected): skip the work
            started = time.perf_counter()
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the awaiting caller, who re-raises it
                future.set_exception(exc)
            self._job_seconds = 0.8 * self._job_seconds + 0.2 * (time.perf_counter() - started)


_pool: PriorityPool | None = None
_pool_lock = threading.Lock()


def pool() -> PriorityPool:
    """The process's hashing pool: one worker fewer than the CPUs (argon2 is CPU-bound and
    releases the GIL, so the event loop keeps a core), its bound read from the settings."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = PriorityPool(
                workers=max(1, (os.cpu_count() or 2) - 1),
                max_waiting=PasswordSettings().password_queue_max,
            )
        return _pool


async def _run(priority: int, job: Callable[[], T]) -> T:
    # wrap_future: the loop only waits; cancelling the wait cancels a job not yet started.
    return await asyncio.wrap_future(pool().submit(priority, job))


async def hash_password(password: str) -> str:
    """The argon2id hash of `password` (PHC string format); `HashingBusy` when too many wait."""
    return await _run(REGISTER, lambda: _hasher.hash(password))


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; with no hash, spends the same time and answers False.
    Goes before every waiting `hash_password`; `HashingBusy` when too many logins wait."""

    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await _run(LOGIN, check)
