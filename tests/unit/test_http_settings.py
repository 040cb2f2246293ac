"""The HTTP port's settings: where it listens, and which origins may call it."""

from __future__ import annotations

import pytest

from server.config import Settings


def refusal(**env: str) -> str:
    with pytest.raises(SystemExit) as refused:
        Settings.from_env(env)
    return str(refused.value)


def test_http_is_served_on_loopback_port_8080_by_default_and_empty_turns_it_off():
    assert Settings.from_env({}).http_address == "127.0.0.1:8080"
    assert Settings.from_env({"HTTP_ADDRESS": ""}).http_address == ""


@pytest.mark.parametrize("address", ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:8080"])
def test_plaintext_http_beyond_loopback_is_refused_unless_allowed(address: str):
    assert f"HTTP_ADDRESS='{address}' would serve plaintext beyond this machine" in refusal(HTTP_ADDRESS=address)
    assert Settings.from_env({"HTTP_ADDRESS": address, "ALLOW_PLAINTEXT": "true"}).http_address == address


def test_the_two_ports_must_differ():
    said = refusal(GRPC_ADDRESS="127.0.0.1:9000", HTTP_ADDRESS="127.0.0.1:9000")
    assert "GRPC_ADDRESS and HTTP_ADDRESS are both '127.0.0.1:9000'" in said
    both_free = Settings.from_env({"GRPC_ADDRESS": "127.0.0.1:0", "HTTP_ADDRESS": "127.0.0.1:0"})
    assert both_free.http_address == "127.0.0.1:0"


@pytest.mark.parametrize("address", ["8080", "localhost", "127.0.0.1:99999"])
def test_a_malformed_http_address_is_named(address: str):
    assert f"HTTP_ADDRESS='{address}' must be host:port" in refusal(HTTP_ADDRESS=address)


def test_cors_origins_are_listed_origins_or_any():
    settings = Settings.from_env({"HTTP_CORS_ORIGINS": "https://app.example.com, http://localhost:3000"})
    assert settings.http_cors_origins == ("https://app.example.com", "http://localhost:3000")
    assert Settings.from_env({"HTTP_CORS_ORIGINS": "*"}).http_cors_origins == ("*",)
    assert Settings.from_env({}).http_cors_origins == ()


@pytest.mark.parametrize("origin", ["app.example.com", "https://app.example.com/", "ftp://app.example.com"])
def test_a_cors_origin_that_is_no_origin_is_refused(origin: str):
    assert "each origin must be scheme://host[:port] with no path" in refusal(HTTP_CORS_ORIGINS=origin)
