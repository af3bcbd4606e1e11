"""Growing lock-outs after failed password checks: the one model behind identity's login
throttle and accounts' `current_password` throttle (pure rules; each service stores its own
counters in its own tables)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThrottlePolicy:
    """Growing delays after failed logins: `free` failures cost nothing, then each further one
    locks the key out for `base * 2**(n-1)` seconds, at most `maximum`; failures older than
    `forget_after` seconds are forgotten."""

    free: int
    base: float
    maximum: float
    forget_after: float

    def delay_after(self, failures: int) -> float:
        """The lock-out that follows the `failures`-th failure in a row."""
        beyond = failures - self.free
        if beyond <= 0:
            return 0.0
        return float(min(self.maximum, self.base * 2 ** min(beyond - 1, 40)))


@dataclass(frozen=True)
class ThrottleState:
    """Failed logins counted for one key (an account or an address), times in epoch seconds."""

    failures: int
    locked_until: float
    last_failure_at: float


def after_failure(policy: ThrottlePolicy, state: ThrottleState | None, now: float) -> ThrottleState:
    """The state after one more failure (a stale count starts again)."""
    failures = 0
    if state is not None and now - state.last_failure_at < policy.forget_after:
        failures = state.failures
    failures += 1
    delay = policy.delay_after(failures)
    # A free failure sets no lock at all: `now + 0` would lock out, for a few microseconds, a
    # concurrent attempt whose clock was read just before this one's (seen as a stray 429).
    return ThrottleState(failures, now + delay if delay > 0 else 0.0, now)


def wait_left(state: ThrottleState | None, now: float) -> float:
    """Seconds until the key may try again (0 when it may now)."""
    if state is None:
        return 0.0
    return max(0.0, state.locked_until - now)
