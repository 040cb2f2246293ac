"""Service tokens, agent tokens and shared server keys (psycopg, hot path).

Tokens are looked up by the SHA-256 of the presented token (server.domain.tokens);
the token itself is returned once, by the function that makes it, and never
stored. Every function takes an autocommit psycopg connection
(`Database.connection()`), which translates database errors.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from server.domain.errors import NotFound
from server.domain.status import BuildStatus
from server.domain.tokens import AGENT_PREFIX, SERVICE_PREFIX, digest, new_token
from server.store.db import Database

Conn = psycopg.AsyncConnection[Any]

# A service token's last_used_time is moved at most this often, so that
# verifying a token is not a write per call (the cache already spares most).
LAST_USED_RESOLUTION = timedelta(minutes=1)
BOOTSTRAP_NAME = "bootstrap-admin"
PAGE_TOKEN_KEY = "page_token_secret"


@dataclass(frozen=True, slots=True)
class ServiceToken:
    name: str
    scopes: tuple[str, ...]
    create_time: datetime
    revoke_time: datetime | None
    last_used_time: datetime | None


@dataclass(frozen=True, slots=True)
class AgentToken:
    id: int
    build_id: str
    expire_time: datetime
    revoke_time: datetime | None


_SERVICE_COLUMNS = "name, scopes, create_time, revoke_time, last_used_time"


def _service(row: tuple[Any, ...]) -> ServiceToken:
    return ServiceToken(row[0], tuple(sorted(row[1])), row[2], row[3], row[4])


async def create_service_token(conn: Conn, name: str, scopes: Iterable[str]) -> str:
    """A new token named `name`, returned once; AlreadyExists when the name is taken."""
    token = new_token(SERVICE_PREFIX)
    await conn.execute(
        "INSERT INTO service_tokens (name, token_hash, scopes) VALUES (%s, %s, %s)",
        (name, digest(token), sorted(scopes)),
    )
    return token


async def list_service_tokens(conn: Conn) -> list[ServiceToken]:
    cur = await conn.execute(f"SELECT {_SERVICE_COLUMNS} FROM service_tokens ORDER BY create_time, id")
    return [_service(row) for row in await cur.fetchall()]


async def revoke_service_token(conn: Conn, name: str) -> ServiceToken:
    """Revoke the token named `name` (a second revocation keeps the first time)."""
    cur = await conn.execute(
        "UPDATE service_tokens SET revoke_time = coalesce(revoke_time, now()) WHERE name = %s "
        f"RETURNING {_SERVICE_COLUMNS}",
        (name,),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound("service token", name, field="name")
    return _service(row)


async def find_service_token(conn: Conn, token_hash: bytes) -> ServiceToken | None:
    """The token of that hash (revoked or not), noting that it was used."""
    cur = await conn.execute(f"SELECT {_SERVICE_COLUMNS} FROM service_tokens WHERE token_hash = %s", (token_hash,))
    row = await cur.fetchone()
    if row is None:
        return None
    found = _service(row)
    if found.revoke_time is None:
        await conn.execute(
            "UPDATE service_tokens SET last_used_time = now() WHERE token_hash = %s "
            "AND (last_used_time IS NULL OR last_used_time < now() - %s)",
            (token_hash, LAST_USED_RESOLUTION),
        )
    return found


async def find_service_token_by_name(conn: Conn, names: Iterable[str]) -> ServiceToken | None:
    """The token named like the first of `names` that names one (revoked or
    not): how a client certificate's identity maps to a service."""
    ordered = list(names)
    cur = await conn.execute(
        f"SELECT {_SERVICE_COLUMNS} FROM service_tokens WHERE name = ANY(%s) "
        "ORDER BY array_position(%s::text[], name) LIMIT 1",
        (ordered, ordered),
    )
    row = await cur.fetchone()
    return None if row is None else _service(row)


async def create_bootstrap_token(conn: Conn) -> str | None:
    """An admin token when no service token exists yet, else None. Replicas
    starting together agree: the first to take the lock creates it, the
    others then see it."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE service_tokens IN SHARE ROW EXCLUSIVE MODE")
        cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM service_tokens)")
        row = await cur.fetchone()
        if row is not None and row[0]:
            return None
        return await create_service_token(conn, BOOTSTRAP_NAME, ["admin"])


async def mint_agent_token(conn: Conn, build_id: str, *, lifetime: timedelta) -> tuple[str, AgentToken]:
    """A token for the agent of `build_id`, valid for `lifetime`; the token is
    returned once. NotFound when the build does not exist."""
    token = new_token(AGENT_PREFIX)
    cur = await conn.execute(
        "INSERT INTO agent_tokens (build_id, token_hash, expire_time) VALUES (%s, %s, now() + %s) "
        "RETURNING id, build_id, expire_time, revoke_time",
        (build_id, digest(token), lifetime),
    )
    row = await cur.fetchone()
    assert row is not None
    return token, AgentToken(*row)


async def _build_status(conn: Conn, build_id: str) -> BuildStatus:
    """The build's status, the row share-locked until the transaction ends; NotFound when there is no build."""
    cur = await conn.execute("SELECT status FROM builds WHERE id = %s FOR SHARE", (build_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound("build", build_id, field="build_id")
    return BuildStatus(row[0])


async def issue_agent_token(
    db: Database, build_id: str, *, lifetime: timedelta, check: Callable[[BuildStatus], None]
) -> tuple[str, AgentToken]:
    """mint_agent_token for a build that exists and passes `check` (given its status)."""
    async with db.connection() as conn, conn.transaction():
        check(await _build_status(conn, build_id))
        return await mint_agent_token(conn, build_id, lifetime=lifetime)


async def revoke_build_agent_tokens(db: Database, build_id: str) -> int:
    """revoke_agent_tokens for a build that exists (NotFound otherwise)."""
    async with db.connection() as conn, conn.transaction():
        await _build_status(conn, build_id)
        return await revoke_agent_tokens(conn, build_id)


async def revoke_agent_tokens(conn: Conn, build_id: str, *, token_id: int | None = None) -> int:
    """Revoke the agent tokens of `build_id` (only `token_id` when given); how many were live."""
    cur = await conn.execute(
        "UPDATE agent_tokens SET revoke_time = now() WHERE build_id = %s AND revoke_time IS NULL "
        "AND (%s::bigint IS NULL OR id = %s::bigint)",
        (build_id, token_id, token_id),
    )
    return cur.rowcount


async def find_agent_token(conn: Conn, token_hash: bytes) -> AgentToken | None:
    cur = await conn.execute(
        "SELECT id, build_id, expire_time, revoke_time FROM agent_tokens WHERE token_hash = %s", (token_hash,)
    )
    row = await cur.fetchone()
    return None if row is None else AgentToken(*row)


async def user_id_by_clerk_id(conn: Conn, clerk_id: str) -> str | None:
    """The id of the User whose clerk_id is `clerk_id`, if there is one."""
    cur = await conn.execute("SELECT id FROM users WHERE clerk_id = %s", (clerk_id,))
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def shared_key(conn: Conn, name: str) -> str:
    """The key `name` every replica of this database shares, made (random,
    256 bits) by whichever asks first."""
    fresh = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    await conn.execute(
        "INSERT INTO server_keys (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING", (name, fresh)
    )
    cur = await conn.execute("SELECT value FROM server_keys WHERE name = %s", (name,))
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])
