"""ResilientClient: what is retried, how long it waits, when it gives up, and the breaker."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from structlog.testing import capture_logs

from mercato.platform.http import (
    CircuitBreaker,
    CircuitOpenError,
    ResilientClient,
    RetryPolicy,
    UpstreamError,
    parse_retry_after,
)


class FakeTime:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def scripted(*answers: int | type[httpx.TransportError]) -> tuple[httpx.MockTransport, list[str]]:
    """A transport answering the given statuses (or raising the given errors) in turn."""
    seen: list[str] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, int):
            return httpx.Response(answer, json={"n": len(seen)})
        raise answer("scripted", request=request)

    return httpx.MockTransport(handler), seen


def state(breaker: CircuitBreaker) -> str:
    """The breaker's state, read afresh (keeps type checkers from narrowing across calls)."""
    return breaker.state


def client(
    transport: httpx.AsyncBaseTransport,
    fake: FakeTime,
    policy: RetryPolicy | None = None,
    breaker: CircuitBreaker | None = None,
) -> ResilientClient:
    return ResilientClient(
        "partner",
        base_url="https://partner.test",
        transport=transport,
        retry=policy or RetryPolicy(),
        breaker=breaker or CircuitBreaker("partner", clock=fake.clock),
        clock=fake.clock,
        sleep=fake.sleep,
    )


async def test_retries_503_then_succeeds_with_full_jitter_backoff() -> None:
    fake = FakeTime()
    transport, seen = scripted(503, 503, 200)
    async with client(transport, fake) as http:
        response = await http.get("/items")
    assert response.status_code == 200
    assert len(seen) == 3
    assert len(fake.sleeps) == 2
    # Full jitter: each wait lies in [0, base * 2^(n-1)].
    assert 0 <= fake.sleeps[0] <= 0.2
    assert 0 <= fake.sleeps[1] <= 0.4


async def test_429_honours_retry_after_seconds() -> None:
    fake = FakeTime()

    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(429, headers={"Retry-After": "3"})
        return httpx.Response(200)

    async with client(httpx.MockTransport(handler), fake) as http:
        response = await http.post("/orders", json={"a": 1})
    assert response.status_code == 200
    assert fake.sleeps == [3.0]


async def test_retry_after_beyond_the_deadline_gives_up_at_once() -> None:
    fake = FakeTime()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "120"})

    async with client(httpx.MockTransport(handler), fake, RetryPolicy(total_timeout=30)) as http:
        with pytest.raises(UpstreamError) as caught:
            await http.get("/x")
    assert fake.sleeps == []
    assert caught.value.status == 429
    assert caught.value.retry_after == 120
    assert caught.value.upstream == "partner"


def test_retry_after_http_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after(header, now=now) == 7
    assert parse_retry_after("5") == 5
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_other_4xx_are_not_retried(status: int) -> None:
    fake = FakeTime()
    transport, seen = scripted(status)
    async with client(transport, fake) as http:
        response = await http.get("/x")
    assert response.status_code == status
    assert len(seen) == 1
    assert fake.sleeps == []


async def test_connect_error_is_retried() -> None:
    fake = FakeTime()
    transport, seen = scripted(httpx.ConnectError, 200)
    async with client(transport, fake) as http:
        response = await http.get("/x")
    assert response.status_code == 200
    assert len(seen) == 2


async def test_read_error_mid_answer_is_not_retried() -> None:
    fake = FakeTime()
    transport, seen = scripted(httpx.ReadError, 200)
    async with client(transport, fake) as http:
        with pytest.raises(UpstreamError):
            await http.post("/x")
    assert len(seen) == 1


async def test_gives_up_after_the_attempts_with_the_last_status() -> None:
    fake = FakeTime()
    transport, seen = scripted(502)
    policy = RetryPolicy(attempts=4)
    breaker = CircuitBreaker("partner", failure_threshold=100, clock=fake.clock)
    async with client(transport, fake, policy, breaker) as http:
        with pytest.raises(UpstreamError) as caught:
            await http.get("/x")
    assert len(seen) == 4
    assert caught.value.status == 502
    assert caught.value.attempts == 4


async def test_backoff_never_sleeps_past_the_total_timeout() -> None:
    fake = FakeTime()
    transport, _ = scripted(503)
    policy = RetryPolicy(attempts=50, backoff_base=1.0, backoff_max=10.0, total_timeout=12.0)
    breaker = CircuitBreaker("partner", failure_threshold=1000, clock=fake.clock)
    async with client(transport, fake, policy, breaker) as http:
        with pytest.raises(UpstreamError):
            await http.get("/x")
    assert sum(fake.sleeps) < 12.0


async def test_total_timeout_cuts_a_hanging_upstream() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    policy = RetryPolicy(attempts=5, attempt_timeout=0.2, total_timeout=0.5, backoff_base=0.01)
    http = ResilientClient("slow", transport=httpx.MockTransport(hang), retry=policy)
    started = time.monotonic()
    with pytest.raises(UpstreamError) as caught:
        await http.get("http://slow.test/x")
    elapsed = time.monotonic() - started
    await http.aclose()
    assert 0.4 <= elapsed < 1.5
    assert caught.value.status is None


def test_breaker_states_with_a_fake_clock() -> None:
    fake = FakeTime()
    breaker = CircuitBreaker("b", failure_threshold=3, reset_timeout=30, clock=fake.clock)
    for _ in range(3):
        breaker.acquire()
        breaker.record_failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError) as caught:
        breaker.acquire()
    assert caught.value.retry_after == pytest.approx(30)
    fake.now += 30
    assert state(breaker) == "half_open"
    breaker.acquire()  # the one probe
    with pytest.raises(CircuitOpenError):
        breaker.acquire()  # no second probe while the first is in flight
    breaker.record_failure()
    assert breaker.state == "open"  # failed probe reopens for a full period
    fake.now += 29
    assert breaker.state == "open"
    fake.now += 1
    breaker.acquire()
    breaker.release()  # a cancelled probe frees the slot
    breaker.acquire()
    breaker.record_success()
    assert state(breaker) == "closed"


async def test_breaker_opens_after_failures_and_half_open_probe_recovers() -> None:
    fake = FakeTime()
    healthy = False
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200 if healthy else 500)

    breaker = CircuitBreaker("partner", failure_threshold=5, reset_timeout=30, clock=fake.clock)
    policy = RetryPolicy(attempts=1)
    async with client(httpx.MockTransport(handler), fake, policy, breaker) as http:
        for _ in range(5):
            with pytest.raises(UpstreamError):
                await http.get("/x")
        assert breaker.state == "open"
        with pytest.raises(CircuitOpenError):
            await http.get("/x")
        assert calls == 5  # refused without touching the network
        fake.now += 30
        healthy = True
        assert (await http.get("/x")).status_code == 200
        assert state(breaker) == "closed"
        assert calls == 6


async def test_429_does_not_count_against_the_breaker() -> None:
    fake = FakeTime()
    transport, _ = scripted(429)
    breaker = CircuitBreaker("partner", failure_threshold=2, clock=fake.clock)
    async with client(transport, fake, RetryPolicy(attempts=1), breaker) as http:
        for _ in range(5):
            with pytest.raises(UpstreamError):
                await http.get("/x")
    assert breaker.state == "closed"


async def test_every_attempt_is_logged_without_query_headers_or_body() -> None:
    fake = FakeTime()
    transport, _ = scripted(503, 200)
    async with client(transport, fake) as http:
        with capture_logs() as logs:
            await http.get(
                "/orders?api_key=SECRET", headers={"Authorization": "Bearer SECRET"}, params={}
            )
    attempts = [e for e in logs if e["event"].startswith("upstream attempt")]
    assert [e["attempt"] for e in attempts] == [1, 2]
    assert [e["status"] for e in attempts] == [503, 200]
    for entry in attempts:
        assert entry["upstream"] == "partner"
        assert entry["method"] == "GET"
        assert entry["path"] == "/orders"
        assert isinstance(entry["elapsed_ms"], int)
    assert "SECRET" not in repr(logs)


async def test_per_call_policy_override() -> None:
    fake = FakeTime()
    transport, seen = scripted(503)
    async with client(transport, fake) as http:
        with pytest.raises(UpstreamError):
            await http.post("/oauth/token", retry=http.retry.single_attempt())
    assert len(seen) == 1


async def test_stream_retries_the_head_then_hands_over_an_unread_body() -> None:
    fake = FakeTime()
    transport, seen = scripted(503, 429, 200)
    async with client(transport, fake) as http, http.stream("GET", "/export") as response:
        assert response.status_code == 200
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert body == b'{"n":3}' and len(seen) == 3 and len(fake.sleeps) == 2
    assert response.is_closed


async def test_stream_gives_up_like_request() -> None:
    fake = FakeTime()
    transport, seen = scripted(503)
    async with client(transport, fake, RetryPolicy(attempts=2)) as http:
        with pytest.raises(UpstreamError) as caught:
            async with http.stream("GET", "/export"):
                pass
    assert caught.value.status == 503 and len(seen) == 2
