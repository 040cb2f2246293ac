"""Fixtures: one real PostgreSQL and one real server per test session.

Tests call the server the way its users do: through the generated stubs over
a real port (and grpcurl and node where those are the client).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from buildplatform.v1 import build_pb2, project_pb2, user_pb2

from server import migrate
from tests.auth_support import ISSUER, ORIGIN, JwksServer, SigningKey, jwks_server
from tests.support import (
    CertificateAuthority,
    MotoS3,
    ServerProcess,
    create_database,
    drop_database,
    moto_s3,
    running_server,
    start_database,
    stubs,
    tls_env,
)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The admin URL of a real PostgreSQL server."""
    handle, url = start_database()
    yield url
    if handle is not None:
        handle.cleanup()


@pytest.fixture(scope="session")
def database_url(postgres: str) -> Iterator[str]:
    """A fresh database at the newest migration, for this session."""
    url = create_database(postgres)
    migrate.upgrade(url)
    yield url
    drop_database(postgres, url)


@pytest.fixture(scope="session")
def s3() -> Iterator[MotoS3]:
    """A real S3 protocol server (moto) for this session; `s3.bucket()` makes a fresh bucket."""
    with moto_s3() as server:
        yield server


@pytest.fixture(scope="session")
def session_key() -> SigningKey:
    """The identity provider's signing key: the session server verifies user
    session JWTs it signs (`session_key.sign(clerk_id)`)."""
    return SigningKey.rsa()


@pytest.fixture(scope="session")
def jwks(session_key: SigningKey) -> Iterator[JwksServer]:
    """The identity provider's JWKS, served over HTTP on a local port."""
    with jwks_server(session_key) as served:
        yield served


@pytest.fixture(scope="session")
def server(database_url: str, jwks: JwksServer) -> Iterator[ServerProcess]:
    """The session's server: its `token` is an admin token, and it accepts
    user session JWTs of `session_key` (issuer ISSUER, authorized party ORIGIN).
    Its HTTP port (`server.http()`) lets the web pages of ORIGIN call it (CORS)."""
    env = {"AUTH_JWKS_URL": jwks.url, "AUTH_JWT_ISSUER": ISSUER, "AUTH_AUTHORIZED_PARTIES": ORIGIN,
           "HTTP_CORS_ORIGINS": ORIGIN}
    with running_server(database_url, **env) as proc:
        yield proc


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the certificate files of the session's tests."""
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="session")
def ca(certs: Path) -> CertificateAuthority:
    """The CA (made by trustme) of the TLS servers' certificates."""
    return CertificateAuthority(certs, "server-ca")


@pytest.fixture(scope="session")
def tls_server(database_url: str, ca: CertificateAuthority) -> Iterator[ServerProcess]:
    """A server that serves TLS with a certificate of `ca`; its `credentials` trust `ca`."""
    with running_server(database_url, credentials=ca.credentials(), **tls_env(ca.server())) as proc:
        yield proc


@pytest.fixture(scope="session")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture(scope="session")
def api(channel: grpc.Channel) -> SimpleNamespace:
    """Every service's stub, named for what it serves (api.users, api.builds, ...)."""
    return stubs(channel)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def user(api: SimpleNamespace) -> user_pb2.User:
    clerk = unique("user")
    response = api.users.CreateUser(
        user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=clerk, email=f"{clerk}@example.com", name="Test User"))
    )
    return response.user


@pytest.fixture
def project(api: SimpleNamespace, user: user_pb2.User) -> project_pb2.Project:
    response = api.projects.CreateProject(
        project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=user.id, name="Todo app"))
    )
    return response.project


@pytest.fixture
def make_build(api: SimpleNamespace, user: user_pb2.User, project: project_pb2.Project):  # type: ignore[no-untyped-def]
    def make(app_spec: str = "# A todo app\nUsers can add and tick off todos.") -> build_pb2.Build:
        return api.builds.CreateBuild(
            build_pb2.CreateBuildRequest(
                build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec=app_spec)
            )
        ).build

    return make


@pytest.fixture
def build(make_build) -> build_pb2.Build:  # type: ignore[no-untyped-def]
    return make_build()


# Tests that need a program beyond Python and PostgreSQL carry a marker, so a
# person can leave them out while working: pytest -m "not browser and not prometheus"
# (and "not iptables": the one test that drops packets, marked where it is defined).
_MARKED_MODULES = {"test_log_page": "browser", "test_metrics": "prometheus"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
        marker = _MARKED_MODULES.get(module)
        if marker is None and "browser" in item.name:
            marker = "browser"
        if marker is not None:
            item.add_marker(marker)
