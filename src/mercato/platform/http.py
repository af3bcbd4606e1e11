"""Resilient outbound HTTP: per-attempt and total timeouts, retries with full jitter, a breaker.

Every outbound call of the platform goes through a `ResilientClient`, one per upstream. A call
is retried only when repeating it can help and cannot hurt: connect errors and timeouts, 429 and
5xx. A `Retry-After` (seconds or HTTP-date) replaces the backoff; no sleep ever runs past the
total deadline (the call gives up instead, carrying `retry_after` so the caller can reschedule).
Other 4xx answers are returned to the caller untouched. Each attempt is logged with its timing,
never with headers, bodies or the query string (which may hold secrets).

Why not stamina (DESIGN §8 names it): its jitter is additive rather than full, its total timeout
is checked after an attempt so a backoff sleep may overrun the deadline, it cannot honour a
Retry-After that exceeds the deadline by giving up, and its clock and sleep cannot be injected, so
tests would sleep for real. The loop below is thirty lines and does all four.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Literal

import httpx
import structlog

from mercato.platform import metrics

log = structlog.get_logger("mercato.http")

Clock = Callable[[], float]
"""Returns monotonic seconds; injectable so tests need not sleep."""
Sleep = Callable[[float], Awaitable[None]]

# Transport failures where the request surely (connect) or probably harmlessly (read timeout)
# did not take effect upstream; nothing else at the transport level is retried.
_RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadTimeout,
    TimeoutError,  # our own per-attempt cut (asyncio.timeout)
)
_SEND_KWARGS = ("auth", "follow_redirects")


class UpstreamError(Exception):
    """The upstream could not be reached or kept failing; raised after giving up."""

    def __init__(
        self,
        upstream: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(f"{upstream}: {message}")
        self.upstream = upstream
        self.reason = message
        self.status = status
        """The last HTTP status seen, None when no answer came."""
        self.retry_after = retry_after
        """Seconds the upstream asked us to wait (Retry-After), when it did."""
        self.attempts = attempts


class CircuitOpenError(UpstreamError):
    """The upstream's breaker is open: the call was refused without touching the network."""

    def __init__(self, upstream: str, retry_after: float) -> None:
        super().__init__(upstream, "circuit open", retry_after=retry_after)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Delays are in seconds."""

    attempts: int = 4
    backoff_base: float = 0.2
    backoff_max: float = 10.0
    attempt_timeout: float = 10.0
    total_timeout: float = 30.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter after the `attempt`-th failure: uniform in [0, min(max, base * 2^(n-1))].

        Full jitter spreads replicas that failed together, so they do not retry in lockstep.
        """
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return rng.uniform(0, ceiling)

    def single_attempt(self) -> RetryPolicy:
        """The same timeouts without retries (for calls whose every attempt has a cost)."""
        return replace(self, attempts=1)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP-date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Consecutive-failure breaker: closed → open → half-open (one probe) → closed or open.

    Hand-written on purpose: purgatory reads `time.time()` directly (no injectable clock, and the
    wall clock jumps) and lets every request through while half-open; aiobreaker is unmaintained
    since 2021. This one is forty lines, synchronous (atomic on the event loop) and takes a clock.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False
        metrics.watch_circuit(name, self)

    @property
    def state(self) -> BreakerState:
        """The state as of now (an open breaker past its timeout reads as half-open)."""
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_timeout:
            return "half_open"
        return "open"

    def acquire(self) -> None:
        """Ask to send one attempt; raises `CircuitOpenError` when the breaker refuses."""
        state = self.state
        if state == "closed":
            return
        if state == "half_open" and not self._probe_in_flight:
            self._probe_in_flight = True
            return
        assert self._opened_at is not None
        wait = self._opened_at + self.reset_timeout - self._clock()
        raise CircuitOpenError(self.name, retry_after=max(0.0, wait))

    def record_success(self) -> None:
        """The attempt reached a healthy upstream: close."""
        if self._opened_at is not None:
            log.info("circuit closed", upstream=self.name)
        self._failures = 0
        self._opened_at = None
        self._probe_in_flight = False

    def record_failure(self) -> None:
        """The attempt failed: count it; a failed probe or the N-th failure in a row opens."""
        self._failures += 1
        if self._probe_in_flight or self._failures >= self.failure_threshold:
            if self._opened_at is None or self._probe_in_flight:
                log.warning("circuit opened", upstream=self.name, failures=self._failures)
            self._opened_at = self._clock()
        self._probe_in_flight = False

    def release(self) -> None:
        """The attempt ended without a verdict (cancelled): let another probe through."""
        self._probe_in_flight = False


class ResilientClient:
    """One upstream's `httpx.AsyncClient` behind retries, timeouts and a circuit breaker.

    Answers with a status the policy does not retry (2xx, 3xx, 4xx but 429) are returned as they
    are; after giving up on a retryable failure it raises `UpstreamError`. Per call, `retry=`
    overrides the policy (for example `policy.single_attempt()`).
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str = "",
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: dict[str, str] | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker(name, clock=clock)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # jitter only: need not be cryptographic
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            headers=headers,
            timeout=self.retry.attempt_timeout,
        )

    async def request(
        self, method: str, url: str, *, retry: RetryPolicy | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send with retries; `kwargs` are those of `httpx.AsyncClient.request` but `timeout`."""
        return await self._send_with_retries(method, url, retry or self.retry, False, kwargs)

    @asynccontextmanager
    async def stream(
        self, method: str, url: str, *, retry: RetryPolicy | None = None, **kwargs: Any
    ) -> AsyncIterator[httpx.Response]:
        """Like `request`, but the body is left for the caller to iterate (constant memory).

        Retries and the breaker cover getting the answer's status and headers; once the body
        flows, a failure is the caller's (a half-read body cannot be retried transparently).
        Each read of the body is bounded by the policy's attempt timeout.
        """
        response = await self._send_with_retries(
            method, url, retry or self.retry, True, dict(kwargs)
        )
        try:
            yield response
        finally:
            await response.aclose()

    async def _send_with_retries(
        self, method: str, url: str, policy: RetryPolicy, stream: bool, kwargs: dict[str, Any]
    ) -> httpx.Response:
        send_kwargs = {k: kwargs.pop(k) for k in _SEND_KWARGS if k in kwargs}
        deadline = self._clock() + policy.total_timeout
        status: int | None = None
        retry_after: float | None = None
        reason = "no attempt made"
        attempt = 0
        while attempt < policy.attempts:
            attempt += 1
            remaining = deadline - self._clock()
            if remaining <= 0:
                reason = "total timeout"
                break
            self.breaker.acquire()
            timeout = min(policy.attempt_timeout, remaining)
            request = self._client.build_request(
                method, url, timeout=httpx.Timeout(timeout), **kwargs
            )
            fields = {"upstream": self.name, "method": method, "path": request.url.path}
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    # Not streamed: the body is read inside the attempt's time limit; streamed:
                    # the head is, and each later read has the attempt timeout.
                    response = await self._client.send(request, stream=stream, **send_kwargs)
            except _RETRYABLE_ERRORS as exc:
                self.breaker.record_failure()
                status, retry_after = None, None
                reason = type(exc).__name__
                log.warning(
                    "upstream attempt failed",
                    **fields,
                    attempt=attempt,
                    error=reason,
                    elapsed_ms=_ms(started),
                )
            except httpx.HTTPError as exc:
                # A transport failure after the request may have reached the upstream
                # (broken connection mid-answer, ...): not safe to repeat.
                self.breaker.record_failure()
                log.warning(
                    "upstream attempt failed",
                    **fields,
                    attempt=attempt,
                    error=type(exc).__name__,
                    elapsed_ms=_ms(started),
                )
                raise UpstreamError(self.name, type(exc).__name__, attempts=attempt) from exc
            except BaseException:
                self.breaker.release()
                raise
            else:
                status = response.status_code
                if status >= 500:
                    self.breaker.record_failure()
                else:
                    # 429 too: the upstream is alive and answering, only busy.
                    self.breaker.record_success()
                emit = log.warning if _retryable_status(status) else log.info
                emit(
                    "upstream attempt",
                    **fields,
                    attempt=attempt,
                    status=status,
                    elapsed_ms=_ms(started),
                )
                if not _retryable_status(status):
                    return response
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if stream:
                    await response.aclose()
                reason = f"HTTP {status}"
            if attempt >= policy.attempts:
                break
            delay = retry_after if retry_after is not None else policy.backoff(attempt, self._rng)
            if delay >= deadline - self._clock():
                # Sleeping would overrun the deadline (or ignore Retry-After): give up now.
                reason = f"{reason}; next try would pass the total timeout"
                break
            log.info(
                "upstream retry scheduled",
                upstream=self.name,
                attempt=attempt,
                delay_ms=round(delay * 1000),
            )
            await self._sleep(delay)
        raise UpstreamError(
            self.name, reason, status=status, retry_after=retry_after, attempts=attempt
        )

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """GET with the policy."""
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST with the policy (retried only where the request cannot have taken effect,
        or the upstream answered 429/5xx: make POST handlers idempotent upstream-side)."""
        return await self.request("POST", url, **kwargs)

    async def aclose(self) -> None:
        """Close the underlying client if this object created it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> ResilientClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"ResilientClient(name={self.name!r}, breaker={self.breaker.state!r})"


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
