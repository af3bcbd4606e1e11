"""Who is calling: the verified content of an access token, never the token itself."""

from __future__ import annotations

from dataclasses import dataclass

ADMIN_ROLE = "admin"
ADMIN_SCOPE = "mercato.admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a verified access token.

    People and machines are told apart by one rule: identity puts a `roles` claim (possibly
    empty) in every token it issues for a person and never in a client-credentials token, so a
    token without `roles` is a machine's (`is_machine`). The raw token is deliberately not kept.
    """

    sub: str
    roles: frozenset[str]
    scopes: frozenset[str]
    client_id: str | None
    username: str | None
    email: str | None
    jti: str
    expires_at: int
    is_machine: bool
    # The `iat` claim: a revoked client's tokens issued up to the revocation are refused.
    issued_at: int = 0

    @property
    def is_person(self) -> bool:
        """A person's token (the opposite of `is_machine`)."""
        return not self.is_machine

    @property
    def is_admin(self) -> bool:
        """A person with role `admin`, or a machine holding the `mercato.admin` scope.

        The scope counts only for machines, as DESIGN §2 says ("admin endpoints also accept
        machine tokens with scope mercato.admin"): a person's admin rights come from the role,
        so a person's token that somehow carried the scope does not make them an admin.
        """
        if self.is_machine:
            return ADMIN_SCOPE in self.scopes
        return ADMIN_ROLE in self.roles

    def has_scope(self, scope: str) -> bool:
        """Whether the token carries `scope` (exactly; admin rights are not considered)."""
        return scope in self.scopes
