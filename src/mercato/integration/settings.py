"""The integration service's own settings (`MERCATO_*` variables and `.env`), DESIGN §5-§6."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mercato.integration.domain import Schedule, parse_schedule
from mercato.platform.durations import Duration


class IntegrationSettings(BaseSettings):
    """Upstreams, the export, and job schedules; unset values give a working embedded setup.

    Schedules read `300` (seconds), `30s`, `5m`, `1h`, `every 5m` or a five-field cron
    expression (`*/5 * * * *`); initial delays, leases, polls and timeouts read `20s`, `5m`,
    `1h` or seconds (`mercato.platform.durations`).
    """

    model_config = SettingsConfigDict(
        env_prefix="MERCATO_", env_file=".env", extra="ignore", env_file_encoding="utf-8"
    )

    # Where this installation's API answers (a gateway, or the embedded process itself): the
    # export job reaches identity's /oauth/token and catalog's export through it. `mercato run`
    # sets it to its own address; otherwise MERCATO_IDENTITY_URL / MERCATO_ISSUER serve.
    public_url: str | None = None
    catalog_url: str | None = None
    demo: bool = False
    partner_port: int = Field(default=8100, ge=0, le=65535)

    external_base_url: str | None = None
    external_token_url: str | None = None
    external_client_id: str | None = None
    external_client_secret: SecretStr | None = None
    external_token_budget_per_hour: int = Field(default=5, ge=1, le=100_000)
    external_scope: str | None = None
    # The provider's name: `source` of the products it supplies (DESIGN §2).
    external_source: str = Field(default="partner", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    external_provider: str = "dummyjson"
    external_products_path: str = "/products"
    external_orders_path: str = "/api/orders"
    external_page_size: int = Field(default=100, ge=1, le=1000)

    # Distributed mode: the exporter's secret (embedded, identity hands it over in-process).
    exporter_client_secret: SecretStr | None = None
    exporter_token_budget_per_hour: int = Field(default=5, ge=1, le=100_000)

    export_dir: Path | None = None  # default: <data dir>/exports
    export_file_pattern: str = "products_%Y%m%d_%H%M%S.csv"
    export_include_header: bool = True
    export_keep: int = Field(default=10, ge=1, le=10_000)
    # Cells starting with = + - @ tab or CR get a leading ' so a spreadsheet shows them as text,
    # never runs them as formulas (OWASP CSV injection); off for machine readers. Prices never.
    export_neutralise_formulas: bool = True

    job_export_products_schedule: str = "5m"
    job_export_products_initial_delay: Duration = Field(default=30.0, ge=0)
    job_sync_external_products_schedule: str = "30m"
    job_sync_external_products_initial_delay: Duration = Field(default=60.0, ge=0)
    job_sync_external_orders_schedule: str = "5m"
    job_sync_external_orders_initial_delay: Duration = Field(default=10.0, ge=0)
    # How long a run may go without a heartbeat before another replica declares it crashed.
    job_lease_seconds: Duration = Field(default=60.0, gt=1)
    scheduler_poll_seconds: Duration = Field(default=1.0, gt=0)

    http_attempt_timeout: Duration = Field(default=10.0, gt=0)
    http_total_timeout: Duration = Field(default=30.0, gt=0)
    # The export streams every product: its whole download may take far longer than one call.
    export_total_timeout: Duration = Field(default=600.0, gt=0)

    @field_validator(
        "job_export_products_schedule",
        "job_sync_external_products_schedule",
        "job_sync_external_orders_schedule",
    )
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        parse_schedule(value)  # ValueError -> a clear settings error at start-up
        return value.strip()

    @field_validator("export_file_pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        if "/" in value or "\\" in value or not value.endswith(".csv") or "%S" not in value:
            raise ValueError("a file name (no directory) ending in .csv, with %S in it")
        return value

    def schedule(self, job: str) -> Schedule:
        """The parsed schedule of `job` (its name with dashes)."""
        value: str = getattr(self, f"job_{job.replace('-', '_')}_schedule")
        return parse_schedule(value)

    def initial_delay(self, job: str) -> float:
        """Seconds after a process starts before `job` may first fire there."""
        value: float = getattr(self, f"job_{job.replace('-', '_')}_initial_delay")
        return value
