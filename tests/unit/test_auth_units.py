"""The pieces of authentication that need no I/O: settings, scopes, token
forms, the credential cache."""

from __future__ import annotations

import pytest

from server.auth.cache import CredentialCache
from server.config import Settings
from server.domain.access import Principal, parse_scopes
from server.domain.tokens import AGENT_PREFIX, SERVICE_PREFIX, digest, new_token, well_formed
from tests.auth_support import SigningKey


def refusal(env: dict[str, str]) -> str:
    with pytest.raises(SystemExit) as refused:
        Settings.from_env(env)
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_a_key_source_without_an_issuer_is_refused_at_start(tmp_path):
    assert "AUTH_JWT_ISSUER" in refusal({"AUTH_JWKS_URL": "https://clerk.example.test/.well-known/jwks.json"})


def test_both_key_sources_at_once_are_refused(tmp_path):
    pem = tmp_path / "key.pem"
    pem.write_bytes(SigningKey.rsa().public_pem())
    message = refusal({"AUTH_JWKS_URL": "https://x.test/jwks", "AUTH_JWT_PUBLIC_KEY_FILE": str(pem),
                       "AUTH_JWT_ISSUER": "https://x.test"})
    assert "both set" in message


def test_a_public_key_file_must_hold_a_pem_public_key(tmp_path):
    pem = tmp_path / "key.pem"
    pem.write_text("not a key")
    assert "is not a PEM public key" in refusal({"AUTH_JWT_PUBLIC_KEY_FILE": str(pem), "AUTH_JWT_ISSUER": "i"})
    pem.write_bytes(SigningKey.ec().public_pem())
    settings = Settings.from_env({"AUTH_JWT_PUBLIC_KEY_FILE": str(pem), "AUTH_JWT_ISSUER": "i"})
    assert settings.auth_jwt_public_key_file == str(pem)


def test_the_jwks_url_must_be_http(tmp_path):
    assert "https://" in refusal({"AUTH_JWKS_URL": "file:///etc/passwd", "AUTH_JWT_ISSUER": "i"})


def test_authorized_parties_are_a_comma_separated_list():
    settings = Settings.from_env({"AUTH_AUTHORIZED_PARTIES": "https://a.test, https://b.test,"})
    assert settings.auth_authorized_parties == ("https://a.test", "https://b.test")


def test_scopes_are_read_write_admin_only():
    assert parse_scopes("read, write") == {"read", "write"}
    with pytest.raises(ValueError, match="unknown scope 'root'"):
        parse_scopes("read,root")
    with pytest.raises(ValueError, match="no scope"):
        parse_scopes(" , ")


def test_tokens_are_recognizable_and_random():
    service, agent = new_token(SERVICE_PREFIX), new_token(AGENT_PREFIX)
    assert well_formed(service, SERVICE_PREFIX) and well_formed(agent, AGENT_PREFIX)
    assert not well_formed(service, AGENT_PREFIX)
    assert new_token(SERVICE_PREFIX) != service
    assert digest(service) != digest(agent) and len(digest(service)) == 32


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_cache_forgets_after_its_ttl():
    clock = Clock()
    cache = CredentialCache(seconds=10, clock=clock)
    cache.put(b"k", Principal("service", "s"))
    clock.now += 9.9
    assert cache.get(b"k") == Principal("service", "s")
    clock.now += 0.2
    assert cache.get(b"k") is None


def test_the_cache_never_outlives_the_credential():
    clock = Clock()
    cache = CredentialCache(seconds=10, clock=clock)
    cache.put(b"k", Principal("user", "u", expire_time=clock.now + 3))
    clock.now += 3
    assert cache.get(b"k") is None


def test_the_cache_is_bounded_and_drops_the_least_recently_used():
    cache = CredentialCache(seconds=10, size=2, clock=Clock())
    cache.put(b"a", Principal("service", "a"))
    cache.put(b"b", Principal("service", "b"))
    assert cache.get(b"a") is not None   # a is now the most recently used
    cache.put(b"c", Principal("service", "c"))
    assert len(cache) == 2
    assert cache.get(b"b") is None and cache.get(b"a") is not None and cache.get(b"c") is not None
