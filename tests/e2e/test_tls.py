"""TLS and mTLS on the gRPC port, through the real server on a real port,
with certificate authorities made by the test (trustme)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from buildplatform.v1 import user_pb2
from grpc_health.v1 import health_pb2

from tests.support import (
    CertificateAuthority,
    Issued,
    ServerProcess,
    eventually,
    fails_with_one_line,
    health,
    open_channel,
    running_server,
    stubs,
    tls_env,
)

GRPCURL = Path(sys.executable).parent / "grpcurl"
SERVING = health_pb2.HealthCheckResponse.SERVING
MISSING_USER = user_pb2.GetUserRequest(id="c" + "0" * 24)


@pytest.fixture(scope="module")
def client_ca(certs: Path) -> CertificateAuthority:
    """The CA of the client certificates an mTLS server accepts."""
    return CertificateAuthority(certs, "client-ca")


@pytest.fixture(scope="module")
def builder(client_ca: CertificateAuthority) -> Issued:
    """A service's client certificate."""
    return client_ca.issue("builder", "builder.internal", "builder.example", common_name="builder-agent")


@pytest.fixture(scope="module")
def mtls_server(
    database_url: str, ca: CertificateAuthority, client_ca: CertificateAuthority, builder: Issued
) -> Iterator[ServerProcess]:
    env = tls_env(ca.server("mtls-server"), client_ca)
    with running_server(database_url, credentials=ca.credentials(builder), **env) as proc:
        yield proc


def refused(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """The status of a call the connection's handshake must refuse."""
    with open_channel(address, credentials) as channel, pytest.raises(grpc.RpcError) as caught:
        stubs(channel).users.GetUser(MISSING_USER, timeout=10)
    return caught.value.code()


def access_log(proc: ServerProcess, method: str) -> list[dict]:
    records = [json.loads(line) for line in proc.lines if line.startswith("{")]
    return [r for r in records if r.get("logger") == "server.access" and r.get("method", "").endswith(method)]


# --- TLS ----------------------------------------------------------------------------


def test_a_client_that_trusts_the_servers_ca_calls_over_tls(tls_server: ServerProcess):
    with tls_server.channel() as channel:
        with pytest.raises(grpc.RpcError) as caught:
            stubs(channel).users.GetUser(MISSING_USER, timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # the server answered, over TLS
    assert health(tls_server.address, credentials=tls_server.credentials) == SERVING
    assert '"tls": "on"' in tls_server.log()
    # Without mTLS no client certificate is read or logged.
    eventually(lambda: bool(access_log(tls_server, "/GetUser")), "the access log line")
    assert "client_cert" not in access_log(tls_server, "/GetUser")[0]


def test_a_plaintext_client_cannot_call_a_tls_server(tls_server: ServerProcess):
    assert refused(tls_server.address, None) == grpc.StatusCode.UNAVAILABLE
    assert health(tls_server.address) != SERVING


def test_a_client_that_trusts_another_ca_is_refused(tls_server: ServerProcess, certs: Path):
    stranger = CertificateAuthority(certs, "stranger-ca")
    assert refused(tls_server.address, stranger.credentials()) == grpc.StatusCode.UNAVAILABLE


def test_grpcurl_lists_the_services_over_tls(tls_server: ServerProcess, ca: CertificateAuthority):
    result = subprocess.run(
        [GRPCURL, "-cacert", ca.ca_file, "-H", f"authorization: Bearer {tls_server.token}", tls_server.address, "list"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "buildplatform.v1.BuildService" in result.stdout.splitlines(), result.stdout


# --- mTLS ---------------------------------------------------------------------------


def test_mtls_refuses_a_client_without_a_certificate(mtls_server: ServerProcess, ca: CertificateAuthority):
    assert refused(mtls_server.address, ca.credentials()) == grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_a_certificate_of_another_ca(mtls_server: ServerProcess, ca: CertificateAuthority, certs: Path):
    impostor = CertificateAuthority(certs, "impostor-ca").issue("impostor", "builder.internal", common_name="builder-agent")
    assert refused(mtls_server.address, ca.credentials(impostor)) == grpc.StatusCode.UNAVAILABLE


def test_mtls_serves_a_verified_client_and_logs_its_identity(mtls_server: ServerProcess):
    with mtls_server.channel() as channel:
        created = stubs(channel).users.CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=f"mtls-{os.getpid()}", email="m@example.com"))
        ).user
    assert created.id
    assert '"tls": "mutual"' in mtls_server.log()
    eventually(lambda: bool(access_log(mtls_server, "/CreateUser")), "the access log line")
    (line,) = access_log(mtls_server, "/CreateUser")
    assert line["code"] == "OK"
    assert line["client_cert"] == "CN=builder-agent DNS=builder.internal DNS=builder.example", line


def test_grpcurl_lists_the_services_with_a_client_certificate(
    mtls_server: ServerProcess, ca: CertificateAuthority, builder: Issued
):
    command = [GRPCURL, "-cacert", ca.ca_file, "-cert", builder.cert_file, "-key", builder.key_file,
               "-H", f"authorization: Bearer {mtls_server.token}", mtls_server.address, "list"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "grpc.health.v1.Health" in result.stdout.splitlines(), result.stdout


# --- rotation -----------------------------------------------------------------------


def test_certificates_replaced_on_disk_are_served_to_new_connections_without_a_restart(
    database_url: str, certs: Path, ca: CertificateAuthority
):
    served = ca.server("rotated")
    with running_server(database_url, credentials=ca.credentials(), **tls_env(served)) as proc:
        assert health(proc.address, credentials=ca.credentials()) == SERVING
        pid = proc.proc.pid if proc.proc else 0
        successor = CertificateAuthority(certs, "successor-ca")
        staged = successor.issue("staged", "localhost", "127.0.0.1")

        # Half a rotation (a new certificate, the old key) is not served: the old certificate stays.
        os.replace(staged.cert_file, served.cert_file)
        assert health(proc.address, credentials=ca.credentials()) == SERVING
        eventually(lambda: "cannot be served" in proc.log(), "the warning about the unusable files")
        assert "is not the key of the certificate" in proc.log()

        os.replace(staged.key_file, served.key_file)
        assert health(proc.address, credentials=successor.credentials()) == SERVING
        assert refused(proc.address, ca.credentials()) == grpc.StatusCode.UNAVAILABLE
        assert proc.proc is not None and proc.proc.poll() is None and proc.proc.pid == pid
        assert "new connections get the new certificate" in proc.log()


# --- start-up -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(certs: Path, ca: CertificateAuthority) -> dict[str, str]:
    """Certificate files, good and bad, for the start-up checks."""
    good, other = ca.server("startup"), ca.server("startup-other")
    garbage = certs / "garbage.pem"
    garbage.write_text("not a certificate\n")
    return {"cert": str(good.cert_file), "key": str(good.key_file), "other_key": str(other.key_file),
            "garbage": str(garbage), "missing": str(certs / "missing.pem"), "ca": str(ca.ca_file)}


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"TLS_CERT_FILE": "missing", "TLS_KEY_FILE": "key"}, "TLS_CERT_FILE='{missing}' does not exist"),
        ({"TLS_CERT_FILE": "cert"}, "TLS_CERT_FILE is set but TLS_KEY_FILE is not"),
        ({"TLS_KEY_FILE": "key"}, "TLS_KEY_FILE is set but TLS_CERT_FILE is not"),
        ({"TLS_CLIENT_CA_FILE": "ca"}, "TLS_CLIENT_CA_FILE is set without TLS_CERT_FILE and TLS_KEY_FILE"),
        ({"TLS_CERT_FILE": "garbage", "TLS_KEY_FILE": "key"}, "TLS_CERT_FILE={garbage} holds no PEM certificate"),
        ({"TLS_CERT_FILE": "cert", "TLS_KEY_FILE": "garbage"}, "TLS_KEY_FILE={garbage} holds no PEM private key"),
        ({"TLS_CERT_FILE": "cert", "TLS_KEY_FILE": "other_key"}, "TLS_KEY_FILE={other_key} is not the key of the certificate"),
        ({"TLS_CERT_FILE": "cert", "TLS_KEY_FILE": "key", "TLS_CLIENT_CA_FILE": "garbage"},
         "TLS_CLIENT_CA_FILE={garbage} holds no PEM certificate"),
        ({"GRPC_ADDRESS": "0.0.0.0:0"}, "GRPC_ADDRESS='0.0.0.0:0' would serve plaintext beyond this machine"),
        ({"GRPC_ADDRESS": "[::]:0"}, "ALLOW_PLAINTEXT=true"),
    ],
)
def test_tls_settings_that_cannot_work_are_refused_in_one_line(
    database_url: str, files: dict[str, str], settings: dict[str, str], said: str
):
    env = {name: files.get(value, value) for name, value in settings.items()}
    line = fails_with_one_line({"DATABASE_URL": database_url, **env})
    assert said.format(**files) in line, line


def test_plaintext_beyond_loopback_is_served_when_the_operator_allows_it(database_url: str):
    with running_server(database_url, GRPC_ADDRESS="0.0.0.0:0", ALLOW_PLAINTEXT="true") as proc:
        assert health(proc.address) == SERVING
        assert '"tls": "off"' in proc.log()
