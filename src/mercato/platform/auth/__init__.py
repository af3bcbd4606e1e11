"""Access tokens for every service: signing keys, issuing, verification, revocation.

Only `mercato.platform.*` is imported here, so any service (identity included) can use it.
The FastAPI guards (`Authenticator`, the bearer scheme) are in `mercato.platform.auth.deps`,
so use cases that only need a `Principal` load no web framework.
"""

from mercato.platform.auth.keys import (
    SIGNING_ALGORITHMS,
    SigningKey,
    generate_signing_key,
    jwk_thumbprint,
    jwks,
    random_kid,
)
from mercato.platform.auth.keysource import (
    KeySource,
    RemoteJwksKeySource,
    StaticKeySource,
    parse_jwks,
)
from mercato.platform.auth.principal import ADMIN_ROLE, ADMIN_SCOPE, Principal
from mercato.platform.auth.revocation import (
    MemoryRevocationStore,
    RedisRevocationStore,
    RevocationStore,
)
from mercato.platform.auth.tokens import ACCESS_TOKEN_TYP, issue_access_token
from mercato.platform.auth.verify import TokenVerifier

__all__ = [
    "ACCESS_TOKEN_TYP",
    "ADMIN_ROLE",
    "ADMIN_SCOPE",
    "SIGNING_ALGORITHMS",
    "KeySource",
    "MemoryRevocationStore",
    "Principal",
    "RedisRevocationStore",
    "RemoteJwksKeySource",
    "RevocationStore",
    "SigningKey",
    "StaticKeySource",
    "TokenVerifier",
    "generate_signing_key",
    "issue_access_token",
    "jwk_thumbprint",
    "jwks",
    "parse_jwks",
    "random_kid",
]
