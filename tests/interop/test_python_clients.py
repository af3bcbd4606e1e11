"""Python clients nobody here wrote, against `mercato run` on a port of its own: discovery read
as authlib reads RFC 8414 metadata, client credentials through authlib's and requests-oauthlib's
OAuth 2.0 clients (client_secret_basic and client_secret_post), introspection and revocation
through authlib, and access tokens verified with PyJWT's `PyJWKClient` and with joserfc."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.interop.conftest import (
    ADVERTISED_URLS,
    AUDIENCE,
    DISCOVERY,
    INTROSPECT_SCOPE,
    RFC8414,
    MachineClient,
    Server,
)

METHODS = ["client_secret_basic", "client_secret_post"]


@pytest.fixture
def insecure_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """authlib and oauthlib refuse plain http unless told it is a test; this is loopback."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.fixture
def sent() -> list[requests.PreparedRequest]:
    """The requests an authlib session sent (filled by `session`'s response hook)."""
    return []


def session(
    client: MachineClient, method: str, sent: list[requests.PreparedRequest] | None = None
) -> OAuth2Session:
    """authlib's requests-based OAuth 2.0 client, authenticating with `method`."""
    oauth = OAuth2Session(client.client_id, client.client_secret, token_endpoint_auth_method=method)
    if sent is not None:
        oauth.hooks["response"].append(lambda answer, **_: sent.append(answer.request))
    return oauth


def client_token(metadata: dict[str, Any], client: MachineClient) -> str:
    """A client_credentials access token of `client`, fetched with authlib."""
    with session(client, "client_secret_basic") as oauth:
        token = oauth.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
    access: str = token["access_token"]
    return access


@pytest.fixture(scope="module")
def reader(server: Server) -> MachineClient:
    """A client without the introspection scope."""
    return server.new_client("interop reader", ["catalog.read"])


@pytest.fixture(scope="module")
def introspector(server: Server) -> MachineClient:
    """A client granted `mercato.introspect`."""
    return server.new_client("interop introspector", [INTROSPECT_SCOPE])


def test_discovery_and_rfc8414_name_the_address_the_server_runs_at(
    server: Server, insecure_transport: None
) -> None:
    """Both well-known documents name this server (not localhost:8000) as issuer and as the
    home of every endpoint, agree with each other, and pass authlib's RFC 8414 checks."""
    with server.http() as http:
        oidc, oauth = http.get(DISCOVERY), http.get(RFC8414)
    assert oidc.status_code == 200, oidc.text
    assert oauth.status_code == 200, oauth.text
    for document in (oidc.json(), oauth.json()):
        assert document["issuer"] == server.base_url
        for name in ADVERTISED_URLS:
            assert document[name].startswith(f"{server.base_url}/"), (name, document[name])
    assert {k: oauth.json()[k] for k in ("issuer", *ADVERTISED_URLS)} == {
        k: oidc.json()[k] for k in ("issuer", *ADVERTISED_URLS)
    }
    checked = AuthorizationServerMetadata(oauth.json())
    # authlib wants a non-empty response_types_supported; a server with no authorization
    # endpoint has no response type to name, and the issue asks that none off be advertised.
    for key in checked.REGISTRY_KEYS:
        if key != "response_types_supported":
            getattr(checked, f"validate_{key}")()
    assert isinstance(checked["response_types_supported"], list)
    assert {"client_secret_basic", "client_secret_post"} <= set(
        checked["token_endpoint_auth_methods_supported"]
    )


@pytest.mark.parametrize("method", METHODS)
def test_authlib_client_credentials(
    server: Server,
    metadata: dict[str, Any],
    reader: MachineClient,
    sent: list[requests.PreparedRequest],
    insecure_transport: None,
    method: str,
) -> None:
    """authlib fetches a client_credentials token at the advertised token endpoint with each
    authentication method, and Mercato accepts that token as this client's."""
    with session(reader, method, sent) as oauth:
        token = oauth.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
    assert token["token_type"].lower() == "bearer"
    assert token["expires_in"] > 0
    (request,) = sent
    body = parse_qs(str(request.body))
    if method == "client_secret_basic":
        expected = base64.b64encode(f"{reader.client_id}:{reader.client_secret}".encode())
        assert request.headers["Authorization"] == f"Basic {expected.decode()}"
        assert "client_secret" not in body
    else:
        assert "Authorization" not in request.headers
        assert body["client_secret"] == [reader.client_secret]
    me = server.me(token["access_token"])
    assert me.status_code == 200, me.text
    assert me.json()["client_id"] == reader.client_id


def test_authlib_sees_a_wrong_secret_as_invalid_client(
    metadata: dict[str, Any], reader: MachineClient, insecure_transport: None
) -> None:
    """A wrong secret is an RFC 6749 `invalid_client` error that authlib parses as one."""
    wrong = MachineClient(reader.client_id, "not-the-secret")
    with session(wrong, "client_secret_basic") as oauth, pytest.raises(OAuthError) as refused:
        oauth.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
    assert refused.value.error == "invalid_client"


@pytest.mark.parametrize("method", METHODS)
def test_requests_oauthlib_client_credentials(
    server: Server,
    metadata: dict[str, Any],
    reader: MachineClient,
    insecure_transport: None,
    method: str,
) -> None:
    """requests-oauthlib's backend-application flow gets a token with each method."""
    oauthlib = pytest.importorskip("oauthlib.oauth2")
    requests_oauthlib = pytest.importorskip("requests_oauthlib")
    oauth = requests_oauthlib.OAuth2Session(
        client=oauthlib.BackendApplicationClient(client_id=reader.client_id)
    )
    if method == "client_secret_basic":
        auth = requests.auth.HTTPBasicAuth(reader.client_id, reader.client_secret)
        token = oauth.fetch_token(metadata["token_endpoint"], auth=auth)
    else:
        token = oauth.fetch_token(
            metadata["token_endpoint"],
            client_id=reader.client_id,
            client_secret=reader.client_secret,
            include_client_id=True,
        )
    me = server.me(token["access_token"])
    assert me.status_code == 200, me.text
    assert me.json()["client_id"] == reader.client_id


def test_introspection_answers_only_a_client_granted_the_introspect_scope(
    metadata: dict[str, Any],
    reader: MachineClient,
    introspector: MachineClient,
    insecure_transport: None,
) -> None:
    """authlib's RFC 7662 call: the introspector learns the reader's token is active and
    whose it is; the reader itself, without `mercato.introspect`, hears only inactive."""
    token = client_token(metadata, reader)
    endpoint = metadata["introspection_endpoint"]
    with session(introspector, "client_secret_post") as oauth:
        answer = oauth.introspect_token(endpoint, token=token)
    assert answer.status_code == 200, answer.text
    assert answer.json()["active"] is True
    assert answer.json()["client_id"] == reader.client_id
    with session(reader, "client_secret_basic") as oauth:
        answer = oauth.introspect_token(endpoint, token=token)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"active": False}


def test_revoked_token_is_inactive_and_refused(
    server: Server,
    metadata: dict[str, Any],
    reader: MachineClient,
    introspector: MachineClient,
    insecure_transport: None,
) -> None:
    """authlib's RFC 7009 revocation: 200, then introspection says inactive and Mercato's own
    API refuses the token."""
    token = client_token(metadata, reader)
    assert server.me(token).status_code == 200
    with session(reader, "client_secret_basic") as oauth:
        revoked = oauth.revoke_token(
            metadata["revocation_endpoint"], token=token, token_type_hint="access_token"
        )
    assert revoked.status_code == 200, revoked.text
    with session(introspector, "client_secret_basic") as oauth:
        answer = oauth.introspect_token(metadata["introspection_endpoint"], token=token)
    assert answer.json() == {"active": False}
    assert server.me(token).status_code == 401


@pytest.fixture
def token(metadata: dict[str, Any], reader: MachineClient, insecure_transport: None) -> str:
    """A fresh access token of the reader."""
    return client_token(metadata, reader)


def test_pyjwkclient_verifies_tokens_against_the_advertised_jwks(
    server: Server, metadata: dict[str, Any], reader: MachineClient, token: str
) -> None:
    """PyJWT's `PyJWKClient` finds the signing key at `jwks_uri`; the signature, the issuer
    (where the server runs) and the audience `mercato` check out."""
    key = jwt.PyJWKClient(metadata["jwks_uri"]).get_signing_key_from_jwt(token)
    assert not key.algorithm_name.startswith("HS")
    claims = jwt.decode(
        token, key, algorithms=[key.algorithm_name], audience=AUDIENCE, issuer=server.base_url
    )
    assert claims["client_id"] == reader.client_id
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key, algorithms=[key.algorithm_name], audience="someone-else")


def test_joserfc_verifies_tokens_against_the_advertised_jwks(
    server: Server, metadata: dict[str, Any], reader: MachineClient, token: str
) -> None:
    """joserfc with the key set from `jwks_uri`: signature, issuer and audience check out."""
    keys = KeySet.import_key_set(httpx.get(metadata["jwks_uri"], timeout=30).json())
    algorithm = jwt.get_unverified_header(token)["alg"]
    decoded = jose_jwt.decode(token, keys, algorithms=[algorithm])
    registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": server.base_url},
        aud={"essential": True, "value": AUDIENCE},
        exp={"essential": True},
    )
    registry.validate(decoded.claims)
    assert decoded.claims["client_id"] == reader.client_id
