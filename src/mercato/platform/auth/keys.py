"""Signing keys: generation, PEM storage and their public JWK / JWKS form.

Only asymmetric algorithms exist here (ES256 on P-256, EdDSA on Ed25519): every service verifies
with the public half, so a shared secret (HS256) would let any verifier forge tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

SIGNING_ALGORITHMS = ("ES256", "EdDSA")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _public_members(public_key: PublicKey) -> dict[str, str]:
    """The JWK members that define the key (exactly the ones RFC 7638 hashes)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        numbers = public_key.public_numbers()
        return {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}


def jwk_thumbprint(public_key: PublicKey) -> str:
    """The RFC 7638 SHA-256 thumbprint of the key, base64url: a stable, content-derived kid."""
    canonical = json.dumps(_public_members(public_key), sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def _alg_of(private_key: PrivateKey) -> str:
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    # Only P-256 goes with ES256; another curve would produce tokens nobody accepts.
    if not isinstance(private_key.curve, ec.SECP256R1):
        raise ValueError(f"unsupported EC curve {private_key.curve.name}; use P-256")
    return "ES256"


@dataclass(frozen=True)
class SigningKey:
    """A private signing key, the `kid` naming it in token headers and JWKS, and its algorithm."""

    kid: str
    # repr=False: a logged or printed key object must not spill the private key.
    private_key: PrivateKey = field(repr=False)
    alg: str = "ES256"

    def __post_init__(self) -> None:
        if not self.kid:
            raise ValueError("a signing key needs a kid")
        if _alg_of(self.private_key) != self.alg:
            raise ValueError(f"key type does not match alg {self.alg}")

    @property
    def public_key(self) -> PublicKey:
        """The public half, the one verifiers use."""
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, Any]:
        """The public key as a JWK with `kid`, `alg` and `use: "sig"` (never private members)."""
        return {**_public_members(self.public_key), "kid": self.kid, "alg": self.alg, "use": "sig"}

    def to_private_pem(self) -> str:
        """The private key as unencrypted PKCS#8 PEM, for the key store (protect it at rest)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    @classmethod
    def from_private_pem(cls, kid: str, pem: str | bytes) -> SigningKey:
        """Load a key written by `to_private_pem`; the algorithm follows from the key type."""
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise ValueError(f"unsupported private key type {type(key).__name__}")
        return cls(kid=kid, private_key=key, alg=_alg_of(key))


def generate_signing_key(alg: str = "ES256", *, kid: str | None = None) -> SigningKey:
    """A fresh key for `alg` ("ES256" or "EdDSA"); `kid` defaults to its RFC 7638 thumbprint."""
    private_key: PrivateKey
    if alg == "ES256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    elif alg == "EdDSA":
        private_key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}; use one of {SIGNING_ALGORITHMS}")
    return SigningKey(
        kid=kid or jwk_thumbprint(private_key.public_key()), private_key=private_key, alg=alg
    )


def random_kid() -> str:
    """A random kid, for deployments that prefer names not derived from the key."""
    return secrets.token_urlsafe(16)


def jwks(keys: Iterable[SigningKey]) -> dict[str, list[dict[str, Any]]]:
    """The JWKS document (`{"keys": [...]}`) publishing the public half of `keys`."""
    return {"keys": [key.public_jwk() for key in keys]}
