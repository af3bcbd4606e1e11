"""Accounts' own knobs, read from `MERCATO_*` environment variables (and `.env`).

They live here rather than in the platform's settings because no other service reads them.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mercato.accounts.domain import DEFAULT_THROTTLE, ThrottlePolicy


class AccountsSettings(BaseSettings):
    """Accounts' throttles: wrong `current_password`s on `PATCH /api/v1/accounts/me` (per
    account) and registrations (per client address)."""

    model_config = SettingsConfigDict(
        env_prefix="MERCATO_", env_file=".env", extra="ignore", env_file_encoding="utf-8"
    )

    # Per account, like identity's login throttle: failures beyond the free ones lock further
    # checks out for a delay that doubles with each failure, up to the maximum.
    accounts_password_free_failures: int = Field(default=DEFAULT_THROTTLE.free, ge=1)
    accounts_password_base_delay_seconds: float = Field(default=DEFAULT_THROTTLE.base, gt=0)
    accounts_password_max_delay_seconds: float = Field(default=DEFAULT_THROTTLE.maximum, gt=0)
    # Failures older than this are forgotten.
    accounts_password_forget_seconds: float = Field(default=DEFAULT_THROTTLE.forget_after, gt=0)
    # Registration attempts per client address in any rolling minute (each costs an argon2id
    # hash); past it `POST /api/v1/accounts/register` answers 429 with `Retry-After`. Generous
    # for people sharing one address (an office, a carrier's NAT), tight for one flooding client.
    accounts_register_per_minute: int = Field(default=30, ge=1, le=1_000_000)

    def password_throttle(self) -> ThrottlePolicy:
        """The throttle policy these settings describe."""
        return ThrottlePolicy(
            free=self.accounts_password_free_failures,
            base=self.accounts_password_base_delay_seconds,
            maximum=self.accounts_password_max_delay_seconds,
            forget_after=self.accounts_password_forget_seconds,
        )
