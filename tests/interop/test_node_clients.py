"""Node clients nobody here wrote, against `mercato run` on a port of its own: openid-client
(v6, pinned in node/package.json) discovers the server both ways (OpenID Connect discovery and
RFC 8414), gets client_credentials tokens with client_secret_basic and client_secret_post,
introspects and revokes; jose verifies tokens with `createRemoteJWKSet` and `jwtVerify`.

openid-client checks that the discovered `issuer` is the URL it was given, so a server that
advertises another address fails here the way it fails for a real relying party.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.interop.conftest import (
    ADVERTISED_URLS,
    AUDIENCE,
    INTROSPECT_SCOPE,
    MachineClient,
    NodeRunner,
    Server,
)


def as_node(
    server: Server, client: MachineClient, auth: str = "basic", **extra: Any
) -> dict[str, Any]:
    """The JSON input of a node/ script acting as `client`."""
    return {
        "issuer": server.base_url,
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "auth": auth,
        **extra,
    }


@pytest.fixture(scope="module")
def reader(server: Server) -> MachineClient:
    """A client without the introspection scope."""
    return server.new_client("node reader", ["catalog.read"])


@pytest.fixture(scope="module")
def introspector(server: Server) -> MachineClient:
    """A client granted `mercato.introspect`."""
    return server.new_client("node introspector", [INTROSPECT_SCOPE])


@pytest.mark.parametrize("algorithm", ["oidc", "oauth2"])
def test_openid_client_discovers_the_server_where_it_runs(
    node: NodeRunner, server: Server, algorithm: str
) -> None:
    """openid-client accepts the metadata at both well-known paths (its issuer check passes)
    and learns every endpoint at this server's address."""
    found = node("discover.mjs", {"issuer": server.base_url, "algorithm": algorithm})
    assert found["issuer"] == server.base_url
    for name in ADVERTISED_URLS:
        assert found[name].startswith(f"{server.base_url}/"), (name, found[name])


@pytest.mark.parametrize("algorithm", ["oidc", "oauth2"])
@pytest.mark.parametrize("auth", ["basic", "post"])
def test_openid_client_client_credentials(
    node: NodeRunner,
    server: Server,
    metadata: dict[str, Any],
    reader: MachineClient,
    auth: str,
    algorithm: str,
) -> None:
    """`clientCredentialsGrant` with client_secret_basic and client_secret_post, after either
    discovery; Mercato accepts the token as this client's."""
    token = node("grant.mjs", as_node(server, reader, auth, algorithm=algorithm))
    assert token["token_type"].lower() == "bearer"
    me = server.me(token["access_token"])
    assert me.status_code == 200, me.text
    assert me.json()["client_id"] == reader.client_id


def test_openid_client_introspection_and_revocation(
    node: NodeRunner,
    server: Server,
    metadata: dict[str, Any],
    reader: MachineClient,
    introspector: MachineClient,
) -> None:
    """`tokenIntrospection` answers the introspector (active, whose) and tells the reader,
    without `mercato.introspect`, only `{"active": false}`; after `tokenRevocation` the token
    is inactive and Mercato refuses it."""
    token = node("grant.mjs", as_node(server, reader))["access_token"]
    seen = node("introspect.mjs", as_node(server, introspector, "post", token=token))
    assert seen["active"] is True
    assert seen["client_id"] == reader.client_id
    assert node("introspect.mjs", as_node(server, reader, token=token)) == {"active": False}

    assert node("revoke.mjs", as_node(server, reader, token=token)) == {"revoked": True}
    after = node("introspect.mjs", as_node(server, introspector, token=token))
    assert after == {"active": False}
    assert server.me(token).status_code == 401


def test_jose_verifies_tokens_with_the_remote_jwks(
    node: NodeRunner, server: Server, metadata: dict[str, Any], reader: MachineClient
) -> None:
    """jose's `createRemoteJWKSet` at the advertised `jwks_uri` and `jwtVerify` with issuer
    (where the server runs) and audience `mercato`; another audience is refused."""
    token = node("grant.mjs", as_node(server, reader))["access_token"]
    check = {"jwks_uri": metadata["jwks_uri"], "token": token, "issuer": server.base_url}
    verified = node("verify.mjs", {**check, "audience": AUDIENCE})
    assert verified["verified"] is True, verified
    assert verified["payload"]["client_id"] == reader.client_id
    assert verified["header"]["kid"]
    refused = node("verify.mjs", {**check, "audience": "someone-else"})
    assert refused == {"verified": False, "code": "ERR_JWT_CLAIM_VALIDATION_FAILED", "claim": "aud"}
