"""Identity over HTTP, on both targets: register, log in, me, log out; refresh rotation and reuse
detection; the per-account login throttle; OAuth 2.0 client credentials (both client
authentication methods, errors, scope narrowing, token budget), revocation and introspection;
discovery and JWKS; forged and unsigned tokens; deleted clients; secrets kept out of the logs."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from tests.contract.api import (
    PASSWORD,
    admin,
    bearer,
    client_token,
    is_problem,
    login,
    login_tokens,
    machine_client,
    newcomer,
    register,
    unique,
    until,
)
from tests.contract.conftest import Target

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
ME = "/api/v1/auth/me"


def _b64url_decode(part: str) -> bytes:
    """Decode one unpadded base64url segment of a JWT."""
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64url_encode(raw: bytes) -> str:
    """Encode bytes as an unpadded base64url JWT segment."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A JWT's header, claims and (encoded) signature, unverified."""
    header, payload, signature = token.split(".")
    return json.loads(_b64url_decode(header)), json.loads(_b64url_decode(payload)), signature


def jwt_of(header: dict[str, Any], claims: dict[str, Any], signature: str) -> str:
    """A compact JWT from its parts (the signature as given, not computed)."""
    encoded = [_b64url_encode(json.dumps(part).encode()) for part in (header, claims)]
    return ".".join([*encoded, signature])


def attempt_login(client: httpx.Client, who: str, password: str) -> httpx.Response:
    """One login attempt, whatever it answers."""
    return client.post(LOGIN, json={"username_or_email": who, "password": password})


def successful_login(client: httpx.Client, who: str, password: str) -> httpx.Response | None:
    """The login's answer when it succeeded (identity learns of new users a moment later)."""
    answer = attempt_login(client, who, password)
    return answer if answer.status_code == 200 else None


def refresh(client: httpx.Client, refresh_token: str) -> httpx.Response:
    """Spend a refresh token."""
    return client.post(REFRESH, json={"refresh_token": refresh_token})


def oauth_error(answer: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """Assert an RFC 6749 §5.2 error answer; its body."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    body: dict[str, Any] = answer.json()
    assert body["error"] == error, body
    return body


def machine_token(
    client: httpx.Client, client_id: str, secret: str, scope: str | None = None
) -> str:
    """A client-credentials access token (asserting the RFC 6749 answer)."""
    answer = client_token(client, client_id, secret, scope)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0, body
    return str(body["access_token"])


def introspect(
    client: httpx.Client, client_id: str, secret: str, token: str, base_url: str | None = None
) -> dict[str, Any]:
    """RFC 7662 introspection of `token` by the given client."""
    url = f"{base_url}/oauth/introspect" if base_url else "/oauth/introspect"
    answer = client.post(url, data={"token": token}, auth=(client_id, secret))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


# --- people: the walkthrough, login answers, throttle ------------------------------------------


def test_register_login_me_logout_over_http(target: Target) -> None:
    with target.client() as client:
        username, profile = register(client, "jane")
        assert profile["username"] == username and profile["roles"] == ["user"], profile
        answer = until(
            lambda: successful_login(client, f"{username}@example.com", PASSWORD),
            "login by e-mail",
        )
        assert answer.headers["cache-control"] == "no-store"
        token = answer.json()["access_token"]
        me = client.get(ME, headers=bearer(token))
        assert me.status_code == 200 and me.json()["username"] == username, me.text
        assert me.json()["sub"] == profile["id"]
        mine = client.get("/api/v1/accounts/me", headers=bearer(token))
        assert mine.status_code == 200 and mine.json()["id"] == profile["id"], mine.text
        assert client.post("/api/v1/auth/logout", headers=bearer(token)).status_code == 204
        is_problem(client.get(ME, headers=bearer(token)), 401)
        is_problem(client.get("/api/v1/accounts/me", headers=bearer(token)), 401)
    assert token not in target.logs()


def test_login_answers_a_bearer_pair_that_is_not_cached(target: Target) -> None:
    with target.client() as client:
        username, profile = register(client)
        login_tokens(client, username)  # identity knows the user now
        answer = attempt_login(client, username, PASSWORD)
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert body["token_type"] == "Bearer", body
        assert isinstance(body["expires_in"], int) and body["expires_in"] > 0, body
        assert body["access_token"] and body["refresh_token"], body
        assert body["access_token"] != body["refresh_token"]
        _, claims, _ = jwt_parts(body["access_token"])
        assert claims["sub"] == profile["id"] and "user" in claims["roles"], claims


def test_unknown_user_and_wrong_password_get_the_same_401(target: Target) -> None:
    with target.client() as client:
        username, _ = register(client)
        login_tokens(client, username)
        wrong = attempt_login(client, username, "Not-The-Password-1")
        nobody = attempt_login(client, unique("nobody"), "Not-The-Password-1")
        first, second = is_problem(wrong, 401), is_problem(nobody, 401)
        same = ("type", "title", "status", "detail")
        assert {k: first.get(k) for k in same} == {k: second.get(k) for k in same}
        assert wrong.headers.get("www-authenticate") == nobody.headers.get("www-authenticate")
        assert "access_token" not in first and "access_token" not in second


def test_failed_logins_beyond_the_free_ones_are_throttled_per_account(target: Target) -> None:
    with target.client() as client:
        username, _ = register(client, "throttled")
        login_tokens(client, username)  # known to identity; its throttle starts clean
        for attempt in range(5):
            is_problem(attempt_login(client, username, f"Wrong-Pass-{attempt}x"), 401)
        # The free failures are spent: the next failure locks the account, at the latest the
        # one after that is refused without a password check.
        answers = [attempt_login(client, username, "Wrong-Pass-more") for _ in range(3)]
        throttled = [a for a in answers if a.status_code == 429]
        assert throttled, [(a.status_code, a.text) for a in answers]
        assert all(a.status_code in (401, 429) for a in answers), [a.text for a in answers]
        is_problem(throttled[0], 429)
        assert int(throttled[0].headers["retry-after"]) >= 1, throttled[0].headers
        # Per account: another account from the same address logs in at once.
        other, _ = register(client, "bystander")
        login_tokens(client, other)


# --- refresh and logout ------------------------------------------------------------------------


def test_refresh_rotates_and_a_spent_token_revokes_the_family(target: Target) -> None:
    first_url, second_url = target.other_replica("identity")
    with target.client() as client:
        username, _ = register(client)
        pair = login_tokens(client, username)
    with target.client(first_url) as one, target.client(second_url) as other:
        rotated = refresh(one, pair["refresh_token"])
        assert rotated.status_code == 200, rotated.text
        assert rotated.headers["cache-control"] == "no-store"
        new = rotated.json()
        assert new["token_type"] == "Bearer" and new["expires_in"] > 0, new
        assert new["refresh_token"] != pair["refresh_token"]
        assert new["access_token"] != pair["access_token"]
        assert other.get(ME, headers=bearer(new["access_token"])).json()["username"] == username
        # The old refresh token is spent; presenting it again (here, at another replica)
        # revokes the family: the newer refresh token and its access token die with it.
        is_problem(refresh(other, pair["refresh_token"]), 401)
        is_problem(refresh(one, new["refresh_token"]), 401)
        is_problem(one.get(ME, headers=bearer(new["access_token"])), 401)
    with target.client() as client:
        is_problem(refresh(client, new["refresh_token"]), 401)
        # The person is not locked out: a new login starts a new family.
        assert login_tokens(client, username)["refresh_token"] != new["refresh_token"]


def test_a_made_up_refresh_token_is_refused(target: Target) -> None:
    with target.client() as client:
        is_problem(refresh(client, unique("not-a-refresh-token")), 401)


def test_logout_revokes_the_access_token_and_its_refresh_token_everywhere(target: Target) -> None:
    with target.client() as client:
        username, _ = register(client)
        pair = login_tokens(client, username)
        headers = bearer(pair["access_token"])
        assert client.get(ME, headers=headers).status_code == 200
        assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
        is_problem(client.get(ME, headers=headers), 401)
        is_problem(refresh(client, pair["refresh_token"]), 401)
    for service, path in (("identity", ME), ("accounts", "/api/v1/accounts/me")):
        for url in target.replicas(service):
            answer = httpx.get(f"{url}{path}", headers=headers, timeout=30)
            is_problem(answer, 401)
            assert answer.headers["www-authenticate"].lower().startswith("bearer"), answer.headers


# --- me ----------------------------------------------------------------------------------------


def test_me_describes_a_person(target: Target) -> None:
    with target.client() as client:
        username, profile = register(client)
        me = client.get(ME, headers=login(client, username))
        assert me.status_code == 200, me.text
        body = me.json()
        assert body["sub"] == profile["id"], body
        assert body["username"] == username and body["email"] == f"{username}@example.com"
        assert body["roles"] == ["user"] and body["scopes"] == [], body
        boss = client.get(ME, headers=admin(client)).json()
        assert "admin" in boss["roles"] and boss["username"] == "admin", boss


def test_me_describes_a_machine_client(target: Target) -> None:
    with target.client() as client:
        client_id, secret = machine_client(client, admin(client), ["catalog.read", "x.write"])
        token = machine_token(client, client_id, secret)
        me = client.get(ME, headers=bearer(token))
        assert me.status_code == 200, me.text
        body = me.json()
        assert body["client_id"] == client_id, body
        assert body["roles"] == [] and body.get("username") is None, body
        assert sorted(body["scopes"]) == ["catalog.read", "x.write"], body


def test_me_refuses_anonymous_and_garbage(target: Target) -> None:
    with target.client() as client:
        anonymous = client.get(ME)
        is_problem(anonymous, 401)
        assert anonymous.headers["www-authenticate"].lower().startswith("bearer")
        is_problem(client.get(ME, headers=bearer("not.a.jwt")), 401)
        is_problem(client.get(ME, headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401)


# --- OAuth 2.0 client credentials ----------------------------------------------------------------


def test_client_credentials_with_client_secret_basic(target: Target) -> None:
    with target.client() as client:
        client_id, secret = machine_client(client, admin(client), ["catalog.read"])
        answer = client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] > 0, body
        assert body["scope"] == "catalog.read" and "refresh_token" not in body, body
        _, claims, _ = jwt_parts(body["access_token"])
        assert claims["client_id"] == client_id and claims["scope"] == "catalog.read", claims
        assert "roles" not in claims, claims


def test_client_credentials_with_client_secret_post(target: Target) -> None:
    with target.client() as client:
        client_id, secret = machine_client(client, admin(client), ["catalog.read"])
        answer = client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
            },
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["token_type"] == "Bearer" and body["scope"] == "catalog.read", body
        me = client.get(ME, headers=bearer(body["access_token"]))
        assert me.status_code == 200 and me.json()["client_id"] == client_id, me.text


def test_a_wrong_client_secret_is_invalid_client(target: Target) -> None:
    with target.client() as client:
        client_id, secret = machine_client(client, admin(client), ["catalog.read"])
        basic = client_token(client, client_id, secret + "x")
        oauth_error(basic, 401, "invalid_client")
        assert basic.headers["www-authenticate"].lower().startswith("basic"), basic.headers
        assert "access_token" not in basic.json()
        posted = client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": "wrong-" + secret,
            },
        )
        oauth_error(posted, 401, "invalid_client")
        unknown = client_token(client, unique("no-such-client"), secret)
        assert oauth_error(unknown, 401, "invalid_client") == oauth_error(
            basic, 401, "invalid_client"
        )


def test_an_unsupported_grant_type_is_refused(target: Target) -> None:
    with target.client() as client:
        client_id, secret = machine_client(client, admin(client), ["catalog.read"])
        answer = client.post(
            "/oauth/token",
            data={"grant_type": "authorization_code", "code": "abc"},
            auth=(client_id, secret),
        )
        oauth_error(answer, 400, "unsupported_grant_type")
        assert "access_token" not in answer.json()


def test_a_scope_not_granted_is_invalid_scope_and_narrowing_works(target: Target) -> None:
    with target.client() as client:
        client_id, secret = machine_client(client, admin(client), ["catalog.read", "x.write"])
        refused = client_token(client, client_id, secret, "catalog.read mercato.admin")
        oauth_error(refused, 400, "invalid_scope")
        oauth_error(client_token(client, client_id, secret, "mercato.admin"), 400, "invalid_scope")
        narrowed = client_token(client, client_id, secret, "catalog.read")
        assert narrowed.status_code == 200, narrowed.text
        assert narrowed.json()["scope"] == "catalog.read", narrowed.json()
        me = client.get(ME, headers=bearer(narrowed.json()["access_token"])).json()
        assert me["scopes"] == ["catalog.read"], me
        # Narrowed to nothing the client lacks: a machine with only catalog.read is no admin.
        is_problem(
            client.get("/api/v1/admin/clients", headers=bearer(narrowed.json()["access_token"])),
            403,
        )


def test_a_client_past_its_token_budget_gets_429(target: Target) -> None:
    first_url, second_url = target.other_replica("identity")
    with target.client() as client:
        client_id, secret = machine_client(
            client, admin(client), ["catalog.read"], token_budget_per_hour=2
        )
    # The budget is one per client, whichever replica answers.
    with target.client(first_url) as one, target.client(second_url) as other:
        machine_token(one, client_id, secret)
        machine_token(other, client_id, secret)
        for where in (one, other):
            spent = client_token(where, client_id, secret)
            assert spent.status_code == 429, (spent.status_code, spent.text)
            assert int(spent.headers["retry-after"]) >= 1, spent.headers
            body = spent.json()
            assert isinstance(body["error"], str) and "access_token" not in body, body


# --- revocation, introspection --------------------------------------------------------------------


def test_revoke_then_introspect_says_inactive(target: Target) -> None:
    with target.client() as client:
        client_id, secret = machine_client(
            client, admin(client), ["catalog.read", "mercato.introspect"]
        )
        token = machine_token(client, client_id, secret)
        assert introspect(client, client_id, secret, token)["active"] is True
        revoked = client.post("/oauth/revoke", data={"token": token}, auth=(client_id, secret))
        assert revoked.status_code == 200, revoked.text
        for url in target.replicas("identity"):
            assert introspect(client, client_id, secret, token, url) == {"active": False}
        is_problem(client.get(ME, headers=bearer(token)), 401)
        # RFC 7009 §2.2: revoking again (or an unknown token) is still 200.
        again = client.post("/oauth/revoke", data={"token": token}, auth=(client_id, secret))
        assert again.status_code == 200, again.text


def test_revoke_needs_the_client_the_token_was_issued_to(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        owner_id, owner_secret = machine_client(client, boss, ["catalog.read"])
        thief_id, thief_secret = machine_client(client, boss, ["catalog.read"])
        token = machine_token(client, owner_id, owner_secret)
        wrong = client.post("/oauth/revoke", data={"token": token}, auth=(owner_id, "nope"))
        oauth_error(wrong, 401, "invalid_client")
        stolen = client.post("/oauth/revoke", data={"token": token}, auth=(thief_id, thief_secret))
        assert stolen.status_code in (200, 400), stolen.text
        me = client.get(ME, headers=bearer(token))
        assert me.status_code == 200 and me.json()["client_id"] == owner_id, me.text


def test_introspect_a_live_token(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        client_id, secret = machine_client(client, boss, ["catalog.read", "mercato.introspect"])
        token = machine_token(client, client_id, secret, "catalog.read")
        for url in target.replicas("identity"):
            body = introspect(client, client_id, secret, token, url)
            assert body["active"] is True, body
            assert body["scope"] == "catalog.read" and body["client_id"] == client_id, body
            assert body["sub"] and body["exp"] > body["iat"], body
        username, profile = register(client)
        person = login_tokens(client, username)["access_token"]
        body = introspect(client, client_id, secret, person)
        assert body["active"] is True and body["sub"] == profile["id"], body
        assert body.get("username") == username, body


def test_introspect_needs_the_introspect_scope(target: Target) -> None:
    with target.client() as client:
        client_id, secret = machine_client(client, admin(client), ["catalog.read"])
        token = machine_token(client, client_id, secret)
        assert introspect(client, client_id, secret, token) == {"active": False}
        anonymous = client.post("/oauth/introspect", data={"token": token})
        oauth_error(anonymous, 401, "invalid_client")


# --- discovery and keys -----------------------------------------------------------------------


def test_discovery_names_the_target_as_issuer(target: Target) -> None:
    base = target.base_url.rstrip("/")
    with target.client() as client:
        answer = client.get("/.well-known/openid-configuration")
        assert answer.status_code == 200, answer.text
        metadata = answer.json()
        assert metadata["issuer"].rstrip("/") == base, (metadata["issuer"], base)
        for name in ("token_endpoint", "jwks_uri", "revocation_endpoint", "introspection_endpoint"):
            assert metadata[name].startswith(f"{base}/"), (name, metadata[name])
        assert metadata["token_endpoint"] == f"{base}/oauth/token", metadata
        assert "client_credentials" in metadata["grant_types_supported"], metadata
        assert {"client_secret_basic", "client_secret_post"} <= set(
            metadata["token_endpoint_auth_methods_supported"]
        )
        keys = client.get(metadata["jwks_uri"])
        assert keys.status_code == 200, keys.text
        jwks = keys.json()["keys"]
        assert jwks and all(key["kid"] and key["kty"] for key in jwks), jwks
        assert all("d" not in key for key in jwks), "a private key is published"

        # The advertised token endpoint works, and its tokens name this issuer and a key above.
        client_id, secret = machine_client(client, admin(client), ["catalog.read"])
        issued = client.post(
            metadata["token_endpoint"],
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
        )
        assert issued.status_code == 200, issued.text
        header, claims, _ = jwt_parts(issued.json()["access_token"])
        assert claims["iss"] == metadata["issuer"], claims
        assert header["kid"] in {key["kid"] for key in jwks}, (header, jwks)
        assert header["alg"] != "none" and not header["alg"].startswith("HS"), header


def test_rfc8414_metadata_matches_discovery(target: Target) -> None:
    with target.client() as client:
        discovery = client.get("/.well-known/openid-configuration")
        assert discovery.status_code == 200, discovery.text
        rfc8414 = client.get("/.well-known/oauth-authorization-server")
        assert rfc8414.status_code == 200, rfc8414.text
        for name in ("issuer", "token_endpoint", "jwks_uri", "revocation_endpoint"):
            assert rfc8414.json()[name] == discovery.json()[name], name


def test_every_identity_replica_serves_the_same_jwks(target: Target) -> None:
    documents = []
    for url in target.replicas("identity"):
        answer = httpx.get(f"{url}/.well-known/jwks.json", timeout=30)
        assert answer.status_code == 200, answer.text
        documents.append(sorted(key["kid"] for key in answer.json()["keys"]))
    assert documents and documents[0] and all(doc == documents[0] for doc in documents), documents


# --- attacks on tokens --------------------------------------------------------------------------


def test_a_token_with_a_changed_signature_is_refused(target: Target) -> None:
    with target.client() as client:
        username, _ = register(client)
        token = login_tokens(client, username)["access_token"]
        assert client.get(ME, headers=bearer(token)).status_code == 200
        head, body, signature = token.split(".")
        middle = len(signature) // 2
        flipped = "A" if signature[middle] != "A" else "B"
        forged = ".".join([head, body, signature[:middle] + flipped + signature[middle + 1 :]])
        is_problem(client.get(ME, headers=bearer(forged)), 401)
        is_problem(client.get(ME, headers=bearer(f"{head}.{body}.")), 401)
        # Claims changed under the genuine signature: a self-made admin.
        header, claims, genuine = jwt_parts(token)
        promoted = jwt_of(header, {**claims, "roles": ["user", "admin"]}, genuine)
        is_problem(client.get(ME, headers=bearer(promoted)), 401)
        is_problem(client.get("/api/v1/admin/accounts", headers=bearer(promoted)), 401)


def test_an_unsigned_alg_none_token_is_refused(target: Target) -> None:
    with target.client() as client:
        username, _ = register(client)
        token = login_tokens(client, username)["access_token"]
        header, claims, _ = jwt_parts(token)
        admin_claims = {**claims, "roles": ["user", "admin"]}
        for alg in ("none", "None", "NONE"):
            unsigned = jwt_of({**header, "alg": alg}, admin_claims, "")
            is_problem(client.get(ME, headers=bearer(unsigned)), 401)
            is_problem(client.get("/api/v1/admin/accounts", headers=bearer(unsigned)), 401)
        bare = jwt_of({"alg": "none", "typ": "JWT"}, claims, "")
        is_problem(client.get(ME, headers=bearer(bare)), 401)


def test_secrets_never_reach_the_logs(target: Target) -> None:
    password = f"Secret-{unique('pw')}-9"
    with target.client() as client:
        username = unique("quiet")
        registered = client.post(
            "/api/v1/accounts/register",
            json={
                "username": username,
                "email": f"{username}@example.com",
                "password": password,
                "confirm_password": password,
            },
        )
        assert registered.status_code == 201, registered.text
        pair = login_tokens(client, username, password)
        attempt_login(client, username, password + "-wrong")  # a failure is logged, not its input
        client.get(ME, headers=bearer(pair["access_token"]))
        rotated = refresh(client, pair["refresh_token"]).json()
        client_id, secret = machine_client(client, admin(client), ["catalog.read"])
        token = machine_token(client, client_id, secret)
        client.get(ME, headers=bearer(token))
        client_token(client, client_id, secret + "-wrong")
        client.post("/api/v1/auth/logout", headers=bearer(rotated["access_token"]))
    # The logs are being written (the new client is named in them), yet hold none of these.
    until(lambda: client_id in target.logs(), "the client's registration logged")
    logs = target.logs()
    secrets = {
        "password": password,
        "client secret": secret,
        "person's access token": pair["access_token"],
        "refresh token": pair["refresh_token"],
        "rotated access token": rotated["access_token"],
        "rotated refresh token": rotated["refresh_token"],
        "machine access token": token,
    }
    for what, value in secrets.items():
        assert value not in logs, f"the {what} is in the logs"
        # A token's signature alone is as good as the token for a replay-minded reader.
        if value.count(".") == 2:
            assert value.split(".")[2] not in logs, f"the {what}'s signature is in the logs"


# --- deleted clients ----------------------------------------------------------------------------


def test_a_deleted_client_gets_no_token_and_its_tokens_are_refused(target: Target) -> None:
    with target.client() as client:
        boss = admin(client)
        client_id, secret = machine_client(client, boss, ["catalog.read"])
        token = machine_token(client, client_id, secret)
        assert client.get(ME, headers=bearer(token)).status_code == 200
        before = client.get("/api/v1/products/export", headers=bearer(token))
        assert before.status_code == 200, before.text
        deleted = client.delete(f"/api/v1/admin/clients/{client_id}", headers=boss)
        assert deleted.status_code == 204, deleted.text
        oauth_error(client_token(client, client_id, secret), 401, "invalid_client")
        is_problem(client.get(ME, headers=bearer(token)), 401)
        listed = client.get("/api/v1/admin/clients", params={"limit": 500}, headers=boss).json()
        assert client_id not in {c["client_id"] for c in listed["items"]}, listed
        is_problem(client.delete(f"/api/v1/admin/clients/{client_id}", headers=boss), 404)
    # Refused at once by every replica: identity's own, and catalog's (which verifies locally).
    for url in target.replicas("identity"):
        is_problem(httpx.get(f"{url}{ME}", headers=bearer(token), timeout=30), 401)
        direct = httpx.post(
            f"{url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
            timeout=30,
        )
        oauth_error(direct, 401, "invalid_client")
    for url in target.replicas("catalog"):
        export = httpx.get(f"{url}/api/v1/products/export", headers=bearer(token), timeout=30)
        is_problem(export, 401)


def test_deleting_a_client_leaves_peoples_sessions_alone(target: Target) -> None:
    with target.client() as client:
        headers = newcomer(client)
        boss = admin(client)
        client_id, _ = machine_client(client, boss, ["catalog.read"])
        assert client.delete(f"/api/v1/admin/clients/{client_id}", headers=boss).status_code == 204
        assert client.get(ME, headers=headers).status_code == 200
