"""The floor: a bare grpc.aio BuildService with no framework in the way.

`python -m bench.bare --database-url URL [--fixed]` serves GetBuild,
ListBuilds and CreateBuild by running the server's own SQL through a raw
psycopg_pool.AsyncConnectionPool (same size as the server's: 10 + 10) and
building the same response messages by hand: no SQLAlchemy, no interceptor,
no access log, no validation beyond what the SQL needs. With --fixed,
GetBuild answers a prebuilt message without touching the database (the
ceiling of grpc.aio itself on this machine).

The responses are byte-for-byte those of the server (the bench checks it),
so the two are compared doing the same work.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
from typing import Any

import cuid
import grpc
from buildplatform.v1 import build_pb2, build_pb2_grpc
from google.protobuf import struct_pb2, timestamp_pb2
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from server.core.pagination import PageTokens

COLUMNS = (
    "id, user_id, project_id, status, app_spec, app_spec_id, sandbox_id, progress, output_url, "
    "artifact_key, create_time, update_time, start_time, finish_time, status_reason, reviews, "
    "revision, last_log_seq, last_event_seq"
)
GET = f"SELECT {COLUMNS} FROM builds WHERE id = %s"
LIST = (
    f"SELECT {COLUMNS} FROM builds WHERE user_id = %s "
    "ORDER BY create_time DESC, id DESC LIMIT %s"
)
OWNER = "SELECT user_id FROM projects WHERE id = %s"
INSERT = (
    "INSERT INTO builds (id, user_id, project_id, status, app_spec, create_time, update_time) "
    f"VALUES (%s, %s, %s, 'PENDING', %s, %s, %s) RETURNING {COLUMNS}"
)
NOTIFY = "SELECT pg_notify('bp_build', %s)"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
STATUS = {name[len("BUILD_STATUS_"):]: value for name, value in build_pb2.BuildStatus.items()}


def _ts(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    delta = value - EPOCH
    return timestamp_pb2.Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)


def _struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def to_pb(row: dict[str, Any]) -> build_pb2.Build:
    return build_pb2.Build(
        id=row["id"], user_id=row["user_id"], project_id=row["project_id"],
        status=STATUS[row["status"]], app_spec=row["app_spec"], app_spec_id=row["app_spec_id"],
        sandbox_id=row["sandbox_id"], progress=_struct(row["progress"]), output_url=row["output_url"],
        artifact_key=row["artifact_key"], create_time=_ts(row["create_time"]),
        update_time=_ts(row["update_time"]), start_time=_ts(row["start_time"]),
        finish_time=_ts(row["finish_time"]), status_reason=row["status_reason"],
        reviews=[], etag=str(row["revision"]), last_log_sequence=row["last_log_seq"],
        last_event_sequence=row["last_event_seq"],
    )


class Bare(build_pb2_grpc.BuildServiceServicer):
    def __init__(self, pool: AsyncConnectionPool[Any], fixed: build_pb2.GetBuildResponse | None) -> None:
        self.pool = pool
        self.fixed = fixed
        self.tokens = PageTokens("bench-floor-only")
        self.failures = 0

    async def GetBuild(self, request: build_pb2.GetBuildRequest, context: Any) -> build_pb2.GetBuildResponse:
        if self.fixed is not None:
            return self.fixed
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(GET, (request.id,))
            row = await cur.fetchone()
        if row is None:
            self.failures += 1
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such build")
        return build_pb2.GetBuildResponse(build=to_pb(row))

    async def ListBuilds(self, request: build_pb2.ListBuildsRequest, context: Any) -> build_pb2.ListBuildsResponse:
        limit = request.page_size or 50
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(LIST, (request.user_id, limit + 1))
            rows = await cur.fetchall()
        after = (rows[limit - 1]["create_time"], rows[limit - 1]["id"]) if len(rows) > limit else None
        return build_pb2.ListBuildsResponse(
            builds=[to_pb(row) for row in rows[:limit]],
            next_page_token=self.tokens.encode_keyset("builds", [request.user_id, request.project_id, []], after),
        )

    async def CreateBuild(self, request: build_pb2.CreateBuildRequest, context: Any) -> build_pb2.CreateBuildResponse:
        build = request.build
        now = dt.datetime.now(dt.UTC)
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(OWNER, (build.project_id,))
            owner = await cur.fetchone()
            if owner is None or owner["user_id"] != build.user_id:
                self.failures += 1
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not the project's owner")
            await cur.execute(INSERT, (cuid.cuid(), build.user_id, build.project_id, build.app_spec, now, now))
            row = await cur.fetchone()
            assert row is not None
            await cur.execute(NOTIFY, (f"{row['id']} {row['status']} 0 0",))
        return build_pb2.CreateBuildResponse(build=to_pb(row))


async def serve(url: str, fixed_id: str | None) -> None:
    async with AsyncConnectionPool(url, min_size=10, max_size=20, open=False) as pool:
        await pool.open(wait=True)
        fixed = None
        if fixed_id:
            async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(GET, (fixed_id,))
                row = await cur.fetchone()
            assert row is not None, fixed_id
            fixed = build_pb2.GetBuildResponse(build=to_pb(row))
        servicer = Bare(pool, fixed)
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        build_pb2_grpc.add_BuildServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(1)
        print(f"failures {servicer.failures}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--fixed", metavar="BUILD_ID", help="answer GetBuild with this build, prebuilt")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.database_url, args.fixed))


if __name__ == "__main__":
    main()
