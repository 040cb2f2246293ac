"""authenticate(): real keys, real JWTs, a real JWKS endpoint, a real database.

Each refusal is asserted by its reason (MISSING, EXPIRED, ...), the code a
client can act on; the message is asserted never to carry the credential."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import psycopg
import pytest

from server.auth import Authenticator, Principal
from server.auth.cache import CredentialCache
from server.auth.sessions import JwksKeys, PemKey, SessionVerifier
from server.domain.errors import Unauthenticated
from server.store import credentials
from server.store.db import Database
from tests.auth_support import (
    ISSUER,
    ORIGIN,
    JwksServer,
    SigningKey,
    forged,
    insert_build,
    insert_user,
    jwks_server,
)
from tests.support import opened_database


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with opened_database(database_url) as database:
        yield database


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey.rsa()


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey.ec()


@pytest.fixture(scope="module")
def jwks(rsa_key: SigningKey, ec_key: SigningKey) -> Iterator[JwksServer]:
    with jwks_server(rsa_key, ec_key) as served:
        yield served


def authenticator(db: Database, keys: JwksKeys | PemKey, **options: object) -> Authenticator:
    verifier = SessionVerifier(keys, issuer=ISSUER, **options)  # type: ignore[arg-type]
    return Authenticator(db, sessions=verifier)


@pytest.fixture
def clerk_user(database_url: str) -> tuple[str, str]:
    """(clerk id, User id) of a user that exists."""
    clerk_id = f"user_{uuid.uuid4().hex[:16]}"
    return clerk_id, insert_user(database_url, clerk_id)


async def refused(auth: Authenticator, credential: str, reason: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        await auth.authenticate(f"Bearer {credential}")
    assert caught.value.reason == reason, caught.value.message
    assert credential not in caught.value.message
    return caught.value


# --- user session JWTs ------------------------------------------------------------------


async def test_an_rs256_session_of_a_known_user_is_that_user(db, jwks, rsa_key, clerk_user):
    clerk_id, user_id = clerk_user
    principal = await authenticator(db, JwksKeys(jwks.url)).authenticate(f"Bearer {rsa_key.sign(clerk_id)}")
    assert principal.kind == "user"
    assert principal.id == user_id and principal.subject == clerk_id
    assert principal.expire_time is not None and principal.expire_time > time.time()
    assert principal.scopes == frozenset()


async def test_an_es256_session_verifies_against_the_same_jwks(db, jwks, ec_key, clerk_user):
    clerk_id, user_id = clerk_user
    principal = await authenticator(db, JwksKeys(jwks.url)).authenticate(f"Bearer {ec_key.sign(clerk_id)}")
    assert principal == Principal("user", user_id, expire_time=principal.expire_time, subject=clerk_id)


async def test_a_pem_public_key_verifies_sessions_without_a_jwks(db, rsa_key, clerk_user):
    clerk_id, user_id = clerk_user
    auth = authenticator(db, PemKey(rsa_key.public_pem()))
    assert (await auth.authenticate(f"Bearer {rsa_key.sign(clerk_id)}")).id == user_id
    await refused(auth, SigningKey.rsa().sign(clerk_id), "BAD_SIGNATURE")


async def test_a_valid_session_of_a_user_without_a_user_row_is_refused(db, jwks, rsa_key):
    await refused(authenticator(db, JwksKeys(jwks.url)), rsa_key.sign("user_nobody_here"), "NO_USER")


async def test_alg_none_is_refused(db, jwks, rsa_key, clerk_user):
    token = forged({"alg": "none", "typ": "JWT", "kid": rsa_key.kid},
                   {"sub": clerk_user[0], "iss": ISSUER, "exp": int(time.time()) + 60}, None)
    await refused(authenticator(db, JwksKeys(jwks.url)), token, "BAD_SIGNATURE")


async def test_hs256_signed_with_the_public_key_is_refused(db, jwks, rsa_key, clerk_user):
    token = forged({"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid},
                   {"sub": clerk_user[0], "iss": ISSUER, "exp": int(time.time()) + 60}, rsa_key.public_pem())
    await refused(authenticator(db, JwksKeys(jwks.url)), token, "BAD_SIGNATURE")
    # With a PEM key, where no kid chooses the key, just the same.
    await refused(authenticator(db, PemKey(rsa_key.public_pem())), token, "BAD_SIGNATURE")


async def test_a_token_signed_by_another_key_under_a_known_kid_is_refused(db, jwks, rsa_key, clerk_user):
    impostor = SigningKey.rsa(kid=rsa_key.kid)
    await refused(authenticator(db, JwksKeys(jwks.url)), impostor.sign(clerk_user[0]), "BAD_SIGNATURE")


async def test_an_unknown_kid_is_refused(db, jwks, clerk_user):
    await refused(authenticator(db, JwksKeys(jwks.url)), SigningKey.rsa().sign(clerk_user[0]), "UNKNOWN_KEY")


async def test_an_expired_session_is_refused(db, jwks, rsa_key, clerk_user):
    past = int(time.time()) - 120
    token = rsa_key.sign(clerk_user[0], iat=past - 60, nbf=past - 60, exp=past)
    await refused(authenticator(db, JwksKeys(jwks.url)), token, "EXPIRED")


async def test_a_session_not_yet_valid_is_refused(db, jwks, rsa_key, clerk_user):
    later = int(time.time()) + 120
    await refused(authenticator(db, JwksKeys(jwks.url)), rsa_key.sign(clerk_user[0], nbf=later, exp=later + 60),
                  "NOT_YET_VALID")


async def test_a_few_seconds_of_clock_skew_are_tolerated(db, jwks, rsa_key, clerk_user):
    soon = int(time.time()) + 2
    token = rsa_key.sign(clerk_user[0], nbf=soon, iat=soon)
    assert (await authenticator(db, JwksKeys(jwks.url)).authenticate(f"Bearer {token}")).id == clerk_user[1]


async def test_a_session_of_another_issuer_is_refused(db, jwks, rsa_key, clerk_user):
    await refused(authenticator(db, JwksKeys(jwks.url)), rsa_key.sign(clerk_user[0], iss="https://evil.example"),
                  "WRONG_ISSUER")


async def test_a_session_without_exp_is_malformed(db, jwks, rsa_key, clerk_user):
    error = await refused(authenticator(db, JwksKeys(jwks.url)), rsa_key.sign(clerk_user[0], exp=None), "MALFORMED")
    assert "exp" in error.message


async def test_the_audience_is_checked_when_configured(db, jwks, rsa_key, clerk_user):
    auth = authenticator(db, JwksKeys(jwks.url), audience="buildplatform")
    assert (await auth.authenticate(f"Bearer {rsa_key.sign(clerk_user[0], aud='buildplatform')}")).id == clerk_user[1]
    await refused(auth, rsa_key.sign(clerk_user[0], aud="another-api"), "WRONG_AUDIENCE")
    await refused(auth, rsa_key.sign(clerk_user[0]), "MALFORMED")   # no aud at all


async def test_the_authorized_party_is_checked_when_configured(db, jwks, rsa_key, clerk_user):
    auth = authenticator(db, JwksKeys(jwks.url), authorized_parties=(ORIGIN, "https://admin.example.test"))
    assert (await auth.authenticate(f"Bearer {rsa_key.sign(clerk_user[0])}")).id == clerk_user[1]
    await refused(auth, rsa_key.sign(clerk_user[0], azp="https://evil.example"), "WRONG_AUTHORIZED_PARTY")
    await refused(auth, rsa_key.sign(clerk_user[0], azp=None), "WRONG_AUTHORIZED_PARTY")


async def test_jwts_are_unsupported_when_no_key_is_configured(db, rsa_key, clerk_user):
    await refused(Authenticator(db), rsa_key.sign(clerk_user[0]), "UNSUPPORTED")


# --- the JWKS cache ------------------------------------------------------------------------


async def test_a_rotated_key_is_accepted_after_one_refetch(db, clerk_user):
    old, new = SigningKey.rsa(), SigningKey.rsa()
    clock = Clock(1000.0)
    with jwks_server(old) as served:
        auth = authenticator(db, JwksKeys(served.url, min_refetch_seconds=30, clock=clock))
        await auth.authenticate(f"Bearer {old.sign(clerk_user[0])}")
        await auth.authenticate(f"Bearer {old.sign(clerk_user[0], jti='another')}")
        assert served.requests == 1   # the keys are cached
        served.keys.append(new)       # the provider rotates: a new kid appears
        clock.now += 31
        assert (await auth.authenticate(f"Bearer {new.sign(clerk_user[0])}")).id == clerk_user[1]
        assert served.requests == 2


async def test_unknown_kids_refetch_at_most_once_per_floor(db, clerk_user):
    known = SigningKey.rsa()
    clock = Clock(1000.0)
    with jwks_server(known) as served:
        keys = JwksKeys(served.url, min_refetch_seconds=30, clock=clock)
        auth = authenticator(db, keys)
        await auth.authenticate(f"Bearer {known.sign(clerk_user[0])}")
        for _ in range(20):   # a stream of made-up kids
            await refused(auth, SigningKey.rsa().sign(clerk_user[0]), "UNKNOWN_KEY")
        assert served.requests == 1
        clock.now += 31
        for _ in range(20):
            await refused(auth, SigningKey.rsa().sign(clerk_user[0]), "UNKNOWN_KEY")
        assert served.requests == 2
        assert keys.fetches == 2


async def test_a_jwks_that_cannot_be_fetched_is_unavailable_not_unauthenticated(db, rsa_key, clerk_user):
    from server.domain.errors import Unavailable
    from tests.support import free_port

    auth = authenticator(db, JwksKeys(f"http://127.0.0.1:{free_port()}/jwks.json", timeout=2))
    with pytest.raises(Unavailable) as caught:
        await auth.authenticate(f"Bearer {rsa_key.sign(clerk_user[0])}")
    assert "AUTH_JWKS_URL" in caught.value.message


# --- the header ------------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "reason"), [
    (None, "MISSING"), ("", "MISSING"), ("Bearer", "MALFORMED"), ("Basic dXNlcjpwYXNz", "MALFORMED"),
    ("Bearer not-a-token", "MALFORMED"), ("Bearer bps_short", "MALFORMED"), ("Bearer a b", "MALFORMED"),
])
async def test_a_missing_or_malformed_header_is_refused_by_name(db, header, reason):
    with pytest.raises(Unauthenticated) as caught:
        await Authenticator(db).authenticate(header)
    assert caught.value.reason == reason


# --- service tokens ----------------------------------------------------------------------------


async def test_a_service_token_is_a_service_principal_with_its_scopes(db):
    name = f"svc-{uuid.uuid4().hex[:8]}"
    async with db.connection() as conn:
        token = await credentials.create_service_token(conn, name, {"read", "write"})
    assert token.startswith("bps_")
    principal = await Authenticator(db).authenticate(f"Bearer {token}")
    assert principal == Principal("service", name, frozenset({"read", "write"}))


async def test_only_the_hash_of_a_service_token_is_stored(db, database_url):
    name = f"svc-{uuid.uuid4().hex[:8]}"
    async with db.connection() as conn:
        token = await credentials.create_service_token(conn, name, {"admin"})
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT * FROM service_tokens WHERE name = %s", (name,)).fetchone()
    assert row is not None
    assert all(token not in str(value) and token.encode() != value for value in row)


async def test_a_revoked_service_token_is_refused_once_the_cache_lets_go(db):
    name = f"svc-{uuid.uuid4().hex[:8]}"
    async with db.connection() as conn:
        token = await credentials.create_service_token(conn, name, {"read"})
    clock = Clock(time.time())
    auth = Authenticator(db, cache=CredentialCache(seconds=10, clock=clock), clock=clock)
    await auth.authenticate(f"Bearer {token}")
    async with db.connection() as conn:
        await credentials.revoke_service_token(conn, name)
    clock.now += 5
    assert (await auth.authenticate(f"Bearer {token}")).id == name   # within the bound: still cached
    clock.now += 6
    await refused(auth, token, "REVOKED")
    await refused(Authenticator(db), token, "REVOKED")


async def test_a_forged_service_token_is_refused(db):
    await refused(Authenticator(db), "bps_" + "A" * 43, "UNKNOWN_TOKEN")


async def test_the_first_verification_of_a_service_token_notes_its_use(db, database_url):
    name = f"svc-{uuid.uuid4().hex[:8]}"
    async with db.connection() as conn:
        token = await credentials.create_service_token(conn, name, {"read"})
        assert (await credentials.list_service_tokens(conn))[-1].last_used_time is None
    await Authenticator(db).authenticate(f"Bearer {token}")
    async with db.connection() as conn:
        listed = {row.name: row for row in await credentials.list_service_tokens(conn)}
    assert listed[name].last_used_time is not None


# --- agent tokens -------------------------------------------------------------------------------


async def test_an_agent_token_is_an_agent_of_its_build(db, database_url):
    build_id, other_build = insert_build(database_url), insert_build(database_url)
    async with db.connection() as conn:
        token, minted = await credentials.mint_agent_token(conn, build_id, lifetime=timedelta(hours=1))
        await credentials.mint_agent_token(conn, other_build, lifetime=timedelta(hours=1))
    assert token.startswith("bpa_")
    principal = await Authenticator(db).authenticate(f"Bearer {token}")
    assert principal.kind == "agent" and principal.build_id == build_id and principal.id == str(minted.id)
    assert principal.expire_time == minted.expire_time.timestamp()


async def test_an_agent_token_after_its_expiry_is_refused(db, database_url):
    async with db.connection() as conn:
        token, _ = await credentials.mint_agent_token(conn, insert_build(database_url), lifetime=timedelta(hours=1))
    two_hours_later = Clock(time.time() + 7200)
    await refused(Authenticator(db, clock=two_hours_later), token, "EXPIRED")


async def test_a_cached_agent_principal_ends_with_its_token(db, database_url):
    async with db.connection() as conn:
        token, minted = await credentials.mint_agent_token(conn, insert_build(database_url), lifetime=timedelta(seconds=30))
    clock = Clock(time.time())
    auth = Authenticator(db, cache=CredentialCache(seconds=3600, clock=clock), clock=clock)
    await auth.authenticate(f"Bearer {token}")
    clock.now = minted.expire_time.timestamp() + 1
    await refused(auth, token, "EXPIRED")


async def test_a_revoked_agent_token_is_refused(db, database_url):
    build_id = insert_build(database_url)
    async with db.connection() as conn:
        token, minted = await credentials.mint_agent_token(conn, build_id, lifetime=timedelta(hours=1))
        kept, _ = await credentials.mint_agent_token(conn, build_id, lifetime=timedelta(hours=1))
        assert await credentials.revoke_agent_tokens(conn, build_id, token_id=minted.id) == 1
    await refused(Authenticator(db), token, "REVOKED")
    assert (await Authenticator(db).authenticate(f"Bearer {kept}")).build_id == build_id


async def test_an_agent_token_for_a_missing_build_is_not_found(db):
    from server.domain.errors import NotFound

    with pytest.raises(NotFound) as caught:
        async with db.connection() as conn:
            await credentials.mint_agent_token(conn, "b" + "0" * 24, lifetime=timedelta(hours=1))
    assert caught.value.resource == "build"


# --- the page-token key ----------------------------------------------------------------------------


async def test_the_shared_key_is_made_once_and_then_read(db):
    name = f"key-{uuid.uuid4().hex[:8]}"
    async with db.connection() as conn:
        first = await credentials.shared_key(conn, name)
        assert await credentials.shared_key(conn, name) == first
    assert len(first) >= 43
