"""Domain metrics read at scrape time: a circuit's state, the event log's masking of secrets."""

from __future__ import annotations

from prometheus_client import REGISTRY

from mercato.platform.events.envelope import Envelope
from mercato.platform.events.log import masked
from mercato.platform.http import CircuitBreaker


def _circuit(upstream: str) -> float | None:
    return REGISTRY.get_sample_value("mercato_circuit_state", {"upstream": upstream})


def test_circuit_state_follows_the_breaker_and_its_clock() -> None:
    now = [100.0]
    breaker = CircuitBreaker(
        "unit-upstream", failure_threshold=2, reset_timeout=30, clock=lambda: now[0]
    )
    assert _circuit("unit-upstream") == 0
    breaker.record_failure()
    assert _circuit("unit-upstream") == 0
    breaker.record_failure()
    assert _circuit("unit-upstream") == 2  # open
    now[0] += 31
    assert _circuit("unit-upstream") == 1  # half-open by the clock alone
    breaker.acquire()
    breaker.record_success()
    assert _circuit("unit-upstream") == 0


def test_secret_fields_are_masked_and_the_rest_kept() -> None:
    envelope = Envelope(
        type="user.created",
        source="accounts",
        subject="u1",
        correlation_id="c1",
        data={"user_id": "u1", "password_hash": "$argon2id$v=19$..."},
    )
    shown = masked(envelope, {"user.created": frozenset({"password_hash"})})
    assert shown == {"user_id": "u1", "password_hash": "***"}
    assert masked(envelope, {}) == envelope.data
