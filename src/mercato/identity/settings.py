"""Identity's own knobs, read from `MERCATO_*` environment variables (and `.env`).

They live here rather than in the platform's settings because no other service reads them.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class IdentitySettings(BaseSettings):
    """Token lifetimes, login throttling, signing keys and bootstrap secrets of identity."""

    model_config = SettingsConfigDict(
        env_prefix="MERCATO_", env_file=".env", extra="ignore", env_file_encoding="utf-8"
    )

    # DESIGN §2: access 15 min for people, 1 h for machines; refresh 14 days (30 remember_me).
    identity_person_token_seconds: int = Field(default=15 * 60, ge=30, le=24 * 3600)
    identity_machine_token_seconds: int = Field(default=3600, ge=30, le=24 * 3600)
    identity_refresh_days: int = Field(default=14, ge=1, le=365)
    identity_remember_me_refresh_days: int = Field(default=30, ge=1, le=365)
    # Signing: ES256 (P-256) or EdDSA (Ed25519); the passphrase, when set, encrypts the private
    # keys stored in identity's database (PKCS#8 with the best available encryption).
    identity_signing_alg: str = Field(default="ES256", pattern="^(ES256|EdDSA)$")
    identity_key_passphrase: SecretStr | None = None
    # How long a replica signs with the keys it read before reading the table again: a rotation
    # made on another replica signs here at most this much later (the JWKS is always fresh).
    identity_key_refresh_seconds: float = Field(default=5.0, gt=0)
    # How often the worker checks that Redis still holds the revocations (after a restart).
    identity_revocation_check_seconds: float = Field(default=5.0, gt=0)
    # Login throttling: per account and per client address, failures beyond the free ones lock
    # further attempts out for a delay that doubles with each failure, up to the maximum.
    identity_login_free_failures: int = Field(default=5, ge=1)
    identity_ip_free_failures: int = Field(default=20, ge=1)
    identity_login_base_delay_seconds: float = Field(default=1.0, gt=0)
    identity_login_max_delay_seconds: float = Field(default=15 * 60, gt=0)
    # Failures older than this are forgotten (a counter does not grow forever).
    identity_login_forget_seconds: float = Field(default=3600, gt=0)
    # How long the embedded process reuses a client it read (0: always read the database). Only
    # the embedded process caches: there every change goes through it and drops its entry; with
    # replicas a deletion must be refused at once everywhere, so each token request reads the
    # database (one primary-key read) instead.
    identity_client_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    # The resource owner password grant (`grant_type=password` at /oauth/token): off server-wide
    # unless turned on here (RFC 9700 §2.4: it hands the person's password to the client); while
    # off it is refused and discovery does not list it, whatever a client's grant_types say.
    identity_password_grant_enabled: bool = False
    # The exporter client's secret (DESIGN §6); generated on first start when unset.
    exporter_client_secret: SecretStr | None = None
