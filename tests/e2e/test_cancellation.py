"""Calls cancelled at any moment (deadlines of a millisecond, clients that
hang up) never lose a pooled database connection: once the storm has passed,
a server with a pool of two answers every call again. A lost connection
never comes back, so calls would keep failing after it."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
from buildplatform.v1 import build_pb2, build_pb2_grpc

from tests.support import WAIT, open_aio_channel, running_server

STORM = 3000   # calls, in waves of 300, each with a deadline of 0.5 to 20 ms


async def _answers_again(server, build, user) -> None:
    """Ten GetBuild and ListBuilds in a row, each within 1.5 s, once the
    server has worked off what the storm left queued (within WAIT)."""
    async with open_aio_channel(server.address, token=server.token) as channel:
        builds = build_pb2_grpc.BuildServiceStub(channel)
        deadline = asyncio.get_running_loop().time() + WAIT
        in_a_row = 0
        while in_a_row < 10:
            try:
                assert (await builds.GetBuild(build_pb2.GetBuildRequest(id=build.id), timeout=1.5)).build.id == build.id
                assert (await builds.ListBuilds(build_pb2.ListBuildsRequest(user_id=user.id), timeout=1.5)).builds
                in_a_row += 1
            except grpc.aio.AioRpcError as error:
                in_a_row = 0
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"the server still fails calls {WAIT:.0f}s after the storm: {error}") from None
                await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def small_pool_server(database_url: str):
    with running_server(database_url, DB_POOL_SIZE="2", DB_POOL_MAX_OVERFLOW="0", LOG_LEVEL="WARNING") as proc:
        yield proc


async def test_cancelled_calls_never_lose_a_pooled_connection(small_pool_server, build, user):
    rng = random.Random(7)
    async with open_aio_channel(small_pool_server.address, token=small_pool_server.token) as channel:
        builds = build_pb2_grpc.BuildServiceStub(channel)
        get = build_pb2.GetBuildRequest(id=build.id)
        listed = build_pb2.ListBuildsRequest(user_id=user.id)   # the other pool (SQLAlchemy)

        async def one(i: int) -> grpc.StatusCode:
            call = builds.GetBuild(get, timeout=rng.uniform(0.0005, 0.02)) if i % 2 else \
                builds.ListBuilds(listed, timeout=rng.uniform(0.0005, 0.02))
            try:
                await call
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        codes: dict[grpc.StatusCode, int] = {}
        for wave in range(STORM // 300):
            for code in await asyncio.gather(*(one(wave * 300 + i) for i in range(300))):
                codes[code] = codes.get(code, 0) + 1
        assert codes.get(grpc.StatusCode.DEADLINE_EXCEEDED, 0) > STORM // 10, codes   # the storm did cut calls
        await _answers_again(small_pool_server, build, user)


async def test_http_clients_that_hang_up_mid_call_never_lose_a_pooled_connection(small_pool_server, build, user):
    """The storm over HTTP/1.1: Connect JSON calls whose connection is closed
    0 to 20 ms after the request was sent."""
    import json

    rng = random.Random(11)
    port = small_pool_server.http_port
    token = small_pool_server.token

    async def hang_up(i: int) -> None:
        method, body = (("GetBuild", {"id": build.id}) if i % 2 else ("ListBuilds", {"userId": user.id}))
        payload = json.dumps(body).encode()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST /buildplatform.v1.BuildService/{method} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload
        )
        await writer.drain()
        await asyncio.sleep(rng.uniform(0, 0.02))
        writer.transport.abort()   # a reset, as a browser tab that closes

    for wave in range(STORM // 300):
        await asyncio.gather(*(hang_up(wave * 300 + i) for i in range(300)))
    await _answers_again(small_pool_server, build, user)
