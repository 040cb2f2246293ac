"""Secret values registered for a build (psycopg, hot path): written and
read by the server only, never returned by an RPC (docs/secrets.md).

Values travel as statement parameters, never in SQL text, so a trace (which
records the SQL, not its parameters) never holds one."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from server.domain.errors import NotFound
from server.domain.status import BuildStatus
from server.store.db import Database
from server.store.feeds import TERMINAL_SQL

Conn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True, slots=True)
class Registered:
    """What a build's masker is made from, at one secrets_version."""

    version: int
    shapes: bool
    values: tuple[str, ...]


def _hash(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


async def insert(conn: Conn, build_id: str, values: Sequence[str]) -> tuple[int, int]:
    """Add `values` (duplicates ignored); how many the build has now, and
    their bytes of UTF-8 together."""
    distinct = list(dict.fromkeys(values))
    cur = await conn.execute(
        "WITH added AS (INSERT INTO build_secrets (build_id, value_hash, value) "
        "SELECT %(id)s, h, v FROM unnest(%(hashes)s::bytea[], %(values)s::text[]) AS s(h, v) "
        "ON CONFLICT DO NOTHING RETURNING octet_length(value) AS size), "
        "kept AS (SELECT octet_length(value) AS size FROM build_secrets WHERE build_id = %(id)s "
        "UNION ALL SELECT size FROM added) "
        "SELECT count(*), coalesce(sum(size), 0) FROM kept",
        {"id": build_id, "hashes": [_hash(v) for v in distinct], "values": distinct},
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def register(
    db: Database, build_id: str, values: Sequence[str], *, check: Callable[[BuildStatus, int, int], None]
) -> int:
    """Add `values` to a build that has not finished and move its
    secrets_version, in one transaction; `check` gets the status, and the
    count and bytes the build would hold, and may refuse (nothing is
    written then). How many values the build holds. NotFound when there is
    no build."""
    async with db.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "UPDATE builds SET secrets_version = secrets_version + 1 "
            f"WHERE id = %s AND status NOT IN ({TERMINAL_SQL}) RETURNING status",
            (build_id,),
        )
        row = await cur.fetchone()
        if row is None:
            cur = await conn.execute("SELECT status FROM builds WHERE id = %s", (build_id,))
            found = await cur.fetchone()
            if found is None:
                raise NotFound("build", build_id, field="build_id")
            check(BuildStatus(found[0]), 0, 0)
            raise AssertionError("check must refuse a finished build")
        count, size = await insert(conn, build_id, values)
        check(BuildStatus(row[0]), count, size)   # raising rolls the transaction back
        return count


async def load(db: Database, build_id: str) -> Registered:
    """The build's secrets_version, shapes switch and values, read together."""
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT secrets_version, mask_shapes, "
            "ARRAY(SELECT value FROM build_secrets WHERE build_id = b.id ORDER BY value_hash) "
            "FROM builds AS b WHERE id = %s",
            (build_id,),
        )
        row = await cur.fetchone()
    if row is None:
        raise NotFound("build", build_id, field="build_id")
    return Registered(int(row[0]), bool(row[1]), tuple(row[2]))
