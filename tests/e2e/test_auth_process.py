"""Credentials as an operator meets them: `python -m server tokens ...`, the
admin token of a first start, and the page-token key replicas share."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from buildplatform.v1 import user_pb2

from server import migrate
from server.auth import Authenticator, Principal
from server.store.db import Database
from tests.support import (
    ROOT,
    ServerProcess,
    create_database,
    drop_database,
    opened_database,
    running_server,
    stubs,
)


@pytest.fixture
def migrated(postgres: str) -> Iterator[str]:
    """A database of its own at the newest migration, with no service token."""
    url = create_database(postgres, prefix="bp_auth")
    migrate.upgrade(url)
    yield url
    drop_database(postgres, url)


@pytest.fixture
async def db(migrated: str) -> AsyncIterator[Database]:
    async with opened_database(migrated) as database:
        yield database


def tokens(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "server", "tokens", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- python -m server tokens ------------------------------------------------------------------


async def test_a_token_created_by_the_cli_authenticates_with_its_scopes(migrated, db):
    created = tokens(migrated, "create", "ci-deployer", "--scopes", "read,write")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("bps_")
    principal = await Authenticator(db).authenticate(f"Bearer {token}")
    assert principal == Principal("service", "ci-deployer", frozenset({"read", "write"}))


async def test_list_shows_names_and_scopes_never_the_tokens(migrated):
    token = tokens(migrated, "create", "reader", "--scopes", "read").stdout.strip().splitlines()[-1]
    tokens(migrated, "create", "operator", "--scopes", "admin")
    listed = tokens(migrated, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert lines[0].split()[:4] == ["NAME", "SCOPES", "CREATED", "REVOKED"]
    assert [line.split()[:2] for line in lines[1:]] == [["reader", "read"], ["operator", "admin"]]
    assert token not in listed.stdout and token[4:] not in listed.stdout


async def test_a_token_revoked_by_the_cli_is_refused(migrated, db):
    from server.domain.errors import Unauthenticated

    token = tokens(migrated, "create", "temporary", "--scopes", "read").stdout.strip().splitlines()[-1]
    revoked = tokens(migrated, "revoke", "temporary")
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked service token 'temporary'" in revoked.stdout
    with pytest.raises(Unauthenticated) as caught:
        await Authenticator(db).authenticate(f"Bearer {token}")
    assert caught.value.reason == "REVOKED"
    listed = tokens(migrated, "list").stdout.strip().splitlines()[1]
    assert listed.split()[0] == "temporary" and listed.split()[3] != "-"   # a revocation time


def test_an_unknown_scope_is_one_line_naming_it(migrated):
    line = one_line_failure(tokens(migrated, "create", "x", "--scopes", "read,sudo"))
    assert "unknown scope 'sudo'" in line and "read, write, admin" in line


def test_a_duplicate_name_is_one_line(migrated):
    assert tokens(migrated, "create", "twice", "--scopes", "read").returncode == 0
    line = one_line_failure(tokens(migrated, "create", "twice", "--scopes", "admin"))
    assert "already exists" in line and "twice" in line


def test_revoking_an_unknown_name_is_one_line(migrated):
    line = one_line_failure(tokens(migrated, "revoke", "nobody"))
    assert "'nobody' not found" in line


def test_the_cli_on_an_unmigrated_database_says_what_to_run(postgres):
    url = create_database(postgres, prefix="bp_auth")
    try:
        line = one_line_failure(tokens(url, "list"))
    finally:
        drop_database(postgres, url)
    assert "--migrate" in line


# --- bootstrap ------------------------------------------------------------------------------------


async def test_a_first_start_writes_an_admin_token_only_its_owner_can_read(migrated, db, tmp_path):
    path = tmp_path / "secrets" / "admin-token"
    with running_server(migrated, AUTH_BOOTSTRAP_TOKEN_FILE=str(path)) as proc:
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert (await Authenticator(db).authenticate(f"Bearer {token}")) == Principal(
        "service", "bootstrap-admin", frozenset({"admin"})
    )
    assert str(path) in proc.log() and token not in proc.log()

    path.unlink()
    with running_server(migrated, AUTH_BOOTSTRAP_TOKEN_FILE=str(path)) as again:
        pass
    assert not path.exists(), "a second start must not make another admin token"
    assert "admin-token" not in again.log()
    assert [line.split()[0] for line in tokens(migrated, "list").stdout.strip().splitlines()[1:]] == ["bootstrap-admin"]


def test_replicas_starting_together_make_one_admin_token(migrated, tmp_path):
    files = [tmp_path / "one" / "admin-token", tmp_path / "two" / "admin-token"]
    servers = [ServerProcess(migrated, env={"AUTH_BOOTSTRAP_TOKEN_FILE": str(path)}) for path in files]
    threads = [threading.Thread(target=server.start) for server in servers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert all(server.port for server in servers), [server.log() for server in servers]
    finally:
        for server in servers:
            server.stop()
    assert sorted(path.exists() for path in files) == [False, True]
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT name FROM service_tokens").fetchall() == [("bootstrap-admin",)]


def test_no_admin_token_is_made_when_a_service_token_exists(migrated, tmp_path):
    assert tokens(migrated, "create", "existing", "--scopes", "read").returncode == 0
    path = tmp_path / "admin-token"
    with running_server(migrated, AUTH_BOOTSTRAP_TOKEN_FILE=str(path)):
        pass
    assert not path.exists()


def test_a_bootstrap_file_that_cannot_be_written_stops_the_start_with_one_line(migrated, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "server"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DATABASE_URL": migrated, "GRPC_ADDRESS": "127.0.0.1:0", "HTTP_ADDRESS": "127.0.0.1:0",
             "METRICS_ADDRESS": "127.0.0.1:0", "AUTH_BOOTSTRAP_TOKEN_FILE": str(blocker / "admin-token")},
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "AUTH_BOOTSTRAP_TOKEN_FILE" in result.stderr.strip().splitlines()[-1]
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM service_tokens").fetchone() == (0,)


# --- the page-token key --------------------------------------------------------------------------


def test_two_servers_without_page_token_secret_accept_each_others_page_tokens(migrated):
    unset = {"PAGE_TOKEN_SECRET": ""}
    with (
        running_server(migrated, **unset) as first,
        running_server(migrated, **unset) as second,
        first.channel() as one,
        second.channel() as other,
    ):
        a, b = stubs(one), stubs(other)
        for n in range(3):
            a.users.CreateUser(user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id=f"pager{n}", email="p@example.com")))
        page = a.users.ListUsers(user_pb2.ListUsersRequest(page_size=1, email="p@example.com"))
        assert page.next_page_token
        rest = b.users.ListUsers(user_pb2.ListUsersRequest(page_size=5, email="p@example.com", page_token=page.next_page_token))
        assert [u.clerk_id for u in page.users] + [u.clerk_id for u in rest.users] == ["pager2", "pager1", "pager0"]
    with psycopg.connect(migrated) as conn:
        row = conn.execute("SELECT value FROM server_keys WHERE name = 'page_token_secret'").fetchone()
    assert row is not None and len(row[0]) >= 43
    in_source = [p for p in Path(ROOT, "server").rglob("*.py") if row[0] in p.read_text()]
    assert in_source == []
    assert not any("development-page-token-key" in p.read_text() for p in Path(ROOT, "server").rglob("*.py"))
