"""Process-wide configuration, read from `MERCATO_*` environment variables and a `.env` file."""

from __future__ import annotations

import os
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mercato.platform.durations import Duration, parse_durations
from mercato.platform.http_settings import parse_networks, parse_origins

DEFAULT_RETRY_DELAYS = (1.0, 5.0, 30.0, 120.0, 600.0)


class Settings(BaseSettings):
    """Every knob of the platform; unset values give a working embedded setup."""

    model_config = SettingsConfigDict(
        env_prefix="MERCATO_", env_file=".env", extra="ignore", env_file_encoding="utf-8"
    )

    env: str = "development"
    data_dir: Path = Path("data")
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "mercato"
    # amqp://… (RabbitMQ) or kafka://host:9092[,host2:9092] (Kafka); none: in-process events.
    broker_url: str | None = None
    broker_exchange: str = "mercato.events"
    # Kafka: the one topic of the event stream (RabbitMQ's counterpart is the exchange).
    broker_topic: str = "mercato.events"
    # RabbitMQ's queues and Kafka's consumer groups and per-service topics start with this.
    broker_queue_prefix: str = "mercato"
    issuer: str = "http://localhost:8000"
    audience: str = "mercato"
    identity_url: str | None = None
    admin_email: str | None = None
    admin_password: str | None = None
    log_level: str = "INFO"
    log_json: bool | None = None
    # `otlp` (where: the standard OTEL_EXPORTER_OTLP_ENDPOINT) or `console` records traces
    # (mercato.platform.tracing); unset, tracing is off.
    otel_exporter: Literal["otlp", "console"] | None = None
    # Delays between handler attempts; after the last, the event goes to dead letters.
    # NoDecode: read as "1,5,30" by the validator below, not as JSON.
    event_retry_delays: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_DELAYS
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_poll_seconds: Duration = Field(default=1.0, gt=0)
    # How long sent events stay in the outbox for the event log before the relay prunes them.
    event_log_keep: Duration = Field(default=7 * 86400.0, gt=0)
    consumer_batch_size: int = Field(default=200, ge=1, le=10_000)
    max_body_bytes: int = 1024 * 1024
    # The most a person may add to their own wallet in one top-up (admins are not capped).
    wallet_topup_limit: Decimal = Field(default=Decimal("10000.00"), gt=0, max_digits=12)
    # The key-encryption key of secrets at rest (comma-separated Fernet keys, the first encrypts;
    # see docs/secrets.md). Unset: embedded generates <data dir>/secrets.key; distributed refuses.
    secrets_key: SecretStr | None = None

    # Proxies whose X-Forwarded-For names the client (CIDRs, comma-separated; see
    # mercato.platform.net). None by default: every peer is the client, whatever it claims.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    # Browser origins allowed to read answers (scheme://host[:port], comma-separated); none by
    # default: CORS is off (mercato.platform.browser).
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()

    # Where `/metrics` may be scraped from without a token (CIDRs, comma-separated); loopback by
    # default. Others need an admin's token (mercato.platform.metrics_access).
    metrics_allow: Annotated[tuple[str, ...], NoDecode] = ("127.0.0.0/8", "::1/128")

    @field_validator("trusted_proxies", "cors_origins", "metrics_allow", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        return value.split(",") if isinstance(value, str) else value

    @field_validator("trusted_proxies", "metrics_allow")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return parse_networks(value)

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return parse_origins(value)

    @field_validator("event_retry_delays", mode="before")
    @classmethod
    def _parse_delays(cls, value: object) -> object:
        # "1,5,30" or "1s,5s,30s,2m": each a duration (mercato.platform.durations).
        return parse_durations(value)

    def database_url_for(self, service: str) -> str:
        """The SQLAlchemy URL of one service's database.

        `MERCATO_<SERVICE>_DATABASE_URL` wins, then `MERCATO_DATABASE_URL` (services share it and
        each keeps its tables in a schema of its own name), else a SQLite file under the data dir.
        """
        override = os.environ.get(f"MERCATO_{service.upper()}_DATABASE_URL")
        if override:
            return override
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / f'{service}.db'}"

    @property
    def distributed(self) -> bool:
        """True when a broker is configured: events travel through RabbitMQ or Kafka."""
        return self.broker_url is not None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return Settings()
