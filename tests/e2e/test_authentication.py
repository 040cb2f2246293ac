"""Who is calling, through the real server on a real port: the attacks a JWT
verifier must refuse, agent tokens on the wrong build, grpcurl with a user's
session, what stays open (health, reflection unless REFLECTION=false), and a
client certificate that stands for a service.

The session's server verifies user sessions against a real JWKS endpoint on
a local port (conftest: `session_key`, `jwks`)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from buildplatform.v1 import build_pb2, user_pb2
from grpc_health.v1 import health_pb2

from tests.auth_support import ISSUER, ORIGIN, SigningKey, forged
from tests.e2e.expect import read
from tests.support import (
    CertificateAuthority,
    ServerProcess,
    health,
    open_channel,
    running_server,
    service_token,
    stubs,
    tls_env,
)

GRPCURL = Path(sys.executable).parent / "grpcurl"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def clerk_user(api: SimpleNamespace) -> user_pb2.User:
    clerk = f"user_{uuid.uuid4().hex[:12]}"
    return api.users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=clerk, email=f"{clerk}@example.com"))
    ).user


def refused_with(server: ServerProcess, authorization: str | None) -> tuple[grpc.StatusCode, str, str]:
    """Call GetUser with raw `authorization` metadata: code, ErrorInfo reason, message."""
    metadata = [] if authorization is None else [("authorization", authorization)]
    with open_channel(server.address) as channel, pytest.raises(grpc.RpcError) as caught:
        stubs(channel).users.GetUser(user_pb2.GetUserRequest(id="c" + "0" * 24), metadata=metadata, timeout=10)
    failed = read(caught.value)
    return failed.code, failed.reason, failed.message


def _claims(subject: str, **override: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": subject, "iss": ISSUER, "iat": now, "nbf": now, "exp": now + 60, "azp": ORIGIN, **override}


# name: a credential for the user `sub` made by an attacker (or a mistake), and the reason it is refused.
ATTACKS: dict[str, tuple[Callable[[SigningKey, str], str], str]] = {
    "alg none": (lambda key, sub: forged({"alg": "none", "typ": "JWT", "kid": key.kid}, _claims(sub), None),
                 "BAD_SIGNATURE"),
    "HS256 signed with the public key": (
        lambda key, sub: forged({"alg": "HS256", "typ": "JWT", "kid": key.kid}, _claims(sub), key.public_pem()),
        "BAD_SIGNATURE"),
    "another key under a known kid": (lambda key, sub: SigningKey.rsa(kid=key.kid).sign(sub), "BAD_SIGNATURE"),
    "an unknown kid": (lambda key, sub: SigningKey.rsa().sign(sub), "UNKNOWN_KEY"),
    "expired": (lambda key, sub: key.sign(sub, exp=int(time.time()) - 60, iat=int(time.time()) - 120,
                                         nbf=int(time.time()) - 120), "EXPIRED"),
    "not yet valid": (lambda key, sub: key.sign(sub, nbf=int(time.time()) + 120, exp=int(time.time()) + 300),
                      "NOT_YET_VALID"),
    "another issuer": (lambda key, sub: key.sign(sub, iss="https://evil.example.test"), "WRONG_ISSUER"),
    "another authorized party": (lambda key, sub: key.sign(sub, azp="https://evil.example.test"),
                                 "WRONG_AUTHORIZED_PARTY"),
    "a user without a User row": (lambda key, sub: key.sign("user_nobody_here"), "NO_USER"),
    "a forged service token": (lambda key, sub: "bps_" + "A" * 43, "UNKNOWN_TOKEN"),
    "a forged agent token": (lambda key, sub: "bpa_" + "A" * 43, "UNKNOWN_TOKEN"),
    "garbage": (lambda key, sub: "not-a-token", "MALFORMED"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_the_server_refuses_credentials_it_must_not_trust(server, session_key, clerk_user, attack):
    make, reason = ATTACKS[attack]
    code, got, message = refused_with(server, f"Bearer {make(session_key, clerk_user.clerk_id)}")
    assert (code, got) == (UNAUTHENTICATED, reason), message
    assert "Bearer" not in message.split("send")[0]   # the message never echoes the credential


@pytest.mark.parametrize(("authorization", "reason"), [(None, "MISSING"), ("Basic dXNlcjpwYXNz", "MALFORMED")])
def test_a_call_without_a_bearer_credential_is_unauthenticated(server, authorization, reason):
    code, got, message = refused_with(server, authorization)
    assert (code, got) == (UNAUTHENTICATED, reason)
    assert "authorization: Bearer" in message


@pytest.mark.parametrize(("credential", "reason", "said"), [
    ("bps_wrongtoken123", "MALFORMED", "a bps_ token is bps_ and 43 characters of A-Z, a-z, 0-9, - and _; "
                                       "this one has 13 after bps_: copy the whole token"),
    ("bpa_" + "A" * 42 + "!", "MALFORMED", "this one has other characters: copy the token exactly"),
    ("bps_" + "A" * 43, "UNKNOWN_TOKEN", "the token is unknown: it was never issued here, or was mistyped"),
], ids=["too short", "another character", "well formed, unknown"])
def test_a_token_of_this_server_that_is_refused_says_what_is_wrong_with_it(server, credential, reason, said):
    """Over both ports, in one line, without the token."""
    code, got, by_grpc = refused_with(server, f"Bearer {credential}")
    assert (code, got) == (UNAUTHENTICATED, reason), by_grpc
    by_http = server.http(credential).unary("buildplatform.v1.UserService/GetUser",
                                            user_pb2.GetUserRequest(id="c" + "0" * 24), user_pb2.GetUserResponse)
    assert (by_http.http_status, by_http.code) == (401, "UNAUTHENTICATED")
    for message in (by_grpc, by_http.message):
        assert said in message and "not a bps_" not in message, message
        assert credential not in message and "\n" not in message, message


def test_the_same_session_signed_properly_is_the_user(server, session_key, clerk_user):
    with open_channel(server.address, token=session_key.sign(clerk_user.clerk_id)) as channel:
        assert stubs(channel).users.GetUser(user_pb2.GetUserRequest(id=clerk_user.id)).user == clerk_user


def test_an_agent_token_serves_its_own_build_only(server, api, make_build):
    mine, other = make_build(), make_build()
    token = api.builds.CreateAgentToken(build_pb2.CreateAgentTokenRequest(build_id=mine.id)).token
    with open_channel(server.address, token=token) as channel:
        agent = stubs(channel)
        assert agent.builds.GetBuild(build_pb2.GetBuildRequest(id=mine.id)).build.id == mine.id
        with pytest.raises(grpc.RpcError) as caught:
            agent.builds.GetBuild(build_pb2.GetBuildRequest(id=other.id))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


# --- grpcurl, health and reflection -----------------------------------------------------


def grpcurl(address: str, *args: str, token: str | None = None, data: str | None = None) -> subprocess.CompletedProcess[str]:
    header = ["-H", f"authorization: Bearer {token}"] if token else []
    body = ["-d", data] if data is not None else []
    return subprocess.run([GRPCURL, "-plaintext", *header, *body, address, *args],
                          capture_output=True, text=True, timeout=30)


def test_grpcurl_calls_with_a_users_session(server, session_key, clerk_user):
    token = session_key.sign(clerk_user.clerk_id)
    mine = grpcurl(server.address, "buildplatform.v1.UserService/GetUserByClerkId", token=token,
                   data=f'{{"clerk_id": "{clerk_user.clerk_id}"}}')
    assert mine.returncode == 0, mine.stderr
    assert clerk_user.id in mine.stdout
    theirs = grpcurl(server.address, "buildplatform.v1.UserService/GetUserByClerkId", token=token,
                     data='{"clerk_id": "somebody_else"}')
    assert theirs.returncode != 0 and "PermissionDenied" in theirs.stderr, theirs.stderr
    anonymous = grpcurl(server.address, "buildplatform.v1.UserService/GetUserByClerkId",
                        data=f'{{"clerk_id": "{clerk_user.clerk_id}"}}')
    assert "Unauthenticated" in anonymous.stderr and "authorization: Bearer" in anonymous.stderr


def test_health_and_reflection_are_open_to_anyone(server):
    assert health(server.address) == health_pb2.HealthCheckResponse.SERVING
    listed = grpcurl(server.address, "list")
    assert listed.returncode == 0 and "buildplatform.v1.BuildService" in listed.stdout


def test_the_contract_tells_clients_who_may_call_each_rpc(server):
    described = grpcurl(server.address, "describe", "buildplatform.v1.BuildLogService.AppendBuildLogs")
    assert "option (.buildplatform.v1.access) = { scope:SCOPE_WRITE agent:true }" in described.stdout, described.stdout


def test_reflection_needs_a_credential_when_turned_off(database_url):
    with running_server(database_url, REFLECTION="false") as proc:
        anonymous = grpcurl(proc.address, "list")
        assert anonymous.returncode != 0 and "Unauthenticated" in anonymous.stderr, anonymous.stderr
        with_token = grpcurl(proc.address, "list", token=proc.token)
        assert with_token.returncode == 0 and "buildplatform.v1.BuildService" in with_token.stdout
        assert health(proc.address) == health_pb2.HealthCheckResponse.SERVING


# --- a client certificate that stands for a service ------------------------------------


def test_a_client_certificate_named_like_a_service_token_is_that_service(database_url, certs):
    server_ca = CertificateAuthority(certs, "authn-server-ca")
    client_ca = CertificateAuthority(certs, "authn-client-ca")
    name = f"builder-{uuid.uuid4().hex[:8]}"
    known = client_ca.issue("known", f"{name}.internal", common_name=name)
    stranger = client_ca.issue("stranger", "stranger.internal", common_name="stranger")
    service_token(database_url, ["read"], name=name)
    env = tls_env(server_ca.server("authn-mtls"), client_ca)
    with running_server(database_url, credentials=server_ca.credentials(known), **env) as proc:
        with open_channel(proc.address, server_ca.credentials(known)) as channel:
            api = stubs(channel)
            with pytest.raises(grpc.RpcError) as caught:
                api.users.GetUser(user_pb2.GetUserRequest(id="c" + "0" * 24))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND   # read: admitted, and told the truth
            with pytest.raises(grpc.RpcError) as caught:
                api.users.CreateUser(user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id="x", email="x@example.com")))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED   # not write
        with open_channel(proc.address, server_ca.credentials(stranger)) as channel, pytest.raises(grpc.RpcError) as caught:
            stubs(channel).users.GetUser(user_pb2.GetUserRequest(id="c" + "0" * 24))
        failed = read(caught.value)
        assert (failed.code, failed.reason) == (UNAUTHENTICATED, "UNKNOWN_CERTIFICATE")
        assert f'"principal": "service:{name}"' in proc.log()


def test_an_unauthenticated_caller_learns_nothing_about_its_request(server):
    """Authentication comes first: bytes that are no request, without a credential, are UNAUTHENTICATED."""
    with open_channel(server.address) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary("/buildplatform.v1.UserService/GetUser")(b"\xff\xff\xff", timeout=10)
    assert caught.value.code() == UNAUTHENTICATED
