"""Which addresses may serve plaintext, and how a client certificate's
identity reads from grpc's auth context."""

from __future__ import annotations

import pytest

from server.config import Settings
from server.rpc.peer import PeerIdentity, identity_from_auth_context


@pytest.mark.parametrize("address", ["127.0.0.1:50051", "127.8.9.10:1", "[::1]:50051", "localhost:50051"])
def test_plaintext_on_loopback_needs_no_permission(address: str):
    assert Settings.from_env({"GRPC_ADDRESS": address}).grpc_address == address


@pytest.mark.parametrize("address", ["0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051", "builds.internal:50051"])
def test_plaintext_beyond_loopback_is_refused_unless_allowed(address: str):
    with pytest.raises(SystemExit) as refused:
        Settings.from_env({"GRPC_ADDRESS": address})
    assert "would serve plaintext beyond this machine" in str(refused.value)
    allowed = Settings.from_env({"GRPC_ADDRESS": address, "ALLOW_PLAINTEXT": "true"})
    assert allowed.allow_plaintext and allowed.grpc_address == address


def test_an_address_beyond_loopback_with_tls_needs_no_permission(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("checked when the server starts")
    key.write_text("checked when the server starts")
    settings = Settings.from_env({"GRPC_ADDRESS": "0.0.0.0:443", "TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)})
    assert settings.tls_cert_file == str(cert) and not settings.allow_plaintext


def test_a_verified_certificate_reads_as_its_names():
    auth = {
        "transport_security_type": [b"ssl"],
        "x509_pem_cert": [b"-----BEGIN CERTIFICATE-----..."],
        "x509_subject": [b"CN=builder-agent,O=Platform"],
        "x509_common_name": [b"builder-agent"],
        "peer_dns": [b"builder.internal"],
        "peer_uri": [b"spiffe://platform/builder"],
    }
    identity = identity_from_auth_context(auth)
    assert identity == PeerIdentity(
        common_name="builder-agent", dns_names=("builder.internal",), uris=("spiffe://platform/builder",),
        subject="CN=builder-agent,O=Platform",
    )
    assert str(identity) == "CN=builder-agent DNS=builder.internal URI=spiffe://platform/builder"


def test_a_connection_without_a_client_certificate_has_no_identity():
    assert identity_from_auth_context({}) is None
    assert identity_from_auth_context({"transport_security_type": [b"ssl"]}) is None


def test_a_certificate_without_names_reads_as_its_subject():
    auth = {"x509_pem_cert": [b"..."], "x509_subject": [b"O=Platform,OU=Builders"]}
    assert str(identity_from_auth_context(auth)) == "O=Platform,OU=Builders"
