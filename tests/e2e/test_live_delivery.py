"""Live delivery across replicas, exactly once and in order, under load.

Two server processes share one database: lines appended through one reach
followers of the other through PostgreSQL LISTEN/NOTIFY.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator

import pytest
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_log_pb2_grpc

from tests.e2e.streaming import append, finish, lines, start_running
from tests.support import ServerProcess, open_aio_channel, running_server, stubs


@pytest.fixture(scope="module")
def replica(database_url: str) -> Iterator[ServerProcess]:
    with running_server(database_url) as proc:
        yield proc


@pytest.fixture(scope="module")
def replica_api(replica: ServerProcess):
    with replica.channel() as channel:
        yield stubs(channel)


def test_a_line_appended_on_one_replica_reaches_a_follower_of_the_other(api, replica_api, build):
    start_running(api, build.id)
    stream = replica_api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=30)
    assert next(stream).caught_up
    append(api, build.id, lines("from replica one"))
    response = next(stream)
    while not response.logs:
        response = next(stream)
    assert [log.message for log in response.logs] == ["from replica one"]
    stream.cancel()


def test_concurrent_appenders_and_a_reconnecting_follower_see_every_line_once_in_order(api, replica_api, build):
    """4 writers append concurrently through replica one; a follower on
    replica two drops its stream after every few messages and resumes from
    its cursor. It must receive every line exactly once, in sequence order,
    and each writer's lines in the order that writer wrote them."""
    start_running(api, build.id)
    writers, batches, per_batch = 4, 40, 25
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            for batch in range(batches):
                append(api, build.id, lines(*[f"{writer}:{batch * per_batch + i}" for i in range(per_batch)]))
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()

    received: list[L.BuildLog] = []
    cursor, reconnects = 0, 0
    rng = random.Random(7)
    finisher = None
    while True:
        stream = replica_api.logs.StreamBuildLogs(
            L.StreamBuildLogsRequest(build_id=build.id, after_sequence=cursor, follow=True), timeout=60
        )
        budget = rng.randint(1, 4)
        ended = True
        for response in stream:
            received.extend(response.logs)
            cursor = response.cursor
            budget -= 1
            if budget == 0:
                stream.cancel()
                reconnects += 1
                ended = False
                break
        if ended:
            break
        if finisher is None and not any(t.is_alive() for t in threads):
            # All writers done: end the build so that the follow ends.
            finisher = threading.Thread(target=finish, args=(api, build.id))
            finisher.start()
    for thread in threads:
        thread.join()
    assert finisher is not None
    finisher.join()
    assert not errors, errors
    total = writers * batches * per_batch
    assert [log.sequence for log in received] == list(range(1, total + 1))
    for writer in range(writers):
        mine = [int(log.message.split(":")[1]) for log in received if log.message.startswith(f"{writer}:")]
        assert mine == list(range(batches * per_batch))
    assert reconnects > 10


def test_a_slow_follower_does_not_hold_back_a_fast_one(api, build):
    """The slow client stops reading while 8 MB of lines are written; the
    fast one still gets everything, and the slow one, when it reads again,
    gets every line once, in order."""
    start_running(api, build.id)
    slow = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=120)
    assert next(slow).caught_up  # ...and then it stops reading for a while
    fast_got: list[int] = []
    fast = api.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=120)
    fast_done = threading.Event()
    total = 2000

    def read_fast() -> None:
        for response in fast:
            fast_got.extend(log.sequence for log in response.logs)
            if len(fast_got) >= total:
                fast_done.set()
                fast.cancel()
                return

    reader = threading.Thread(target=read_fast)
    reader.start()
    payload = "x" * 4000
    for batch in range(total // 100):
        append(api, build.id, lines(*[f"{batch}-{i} {payload}" for i in range(100)]))
    assert fast_done.wait(60), f"fast follower got {len(fast_got)} of {total} lines while the slow one stalled"
    reader.join(10)
    assert fast_got == list(range(1, total + 1))
    finish(api, build.id)
    slow_got = [log.sequence for response in slow for log in response.logs]
    assert slow_got == list(range(1, total + 1))


def test_a_thousand_followers_in_one_process_all_get_every_line(server, api, build):
    start_running(api, build.id)
    followers, channels = 1000, 10

    async def run() -> list[list[int]]:
        chans = [open_aio_channel(server.address, token=server.token) for _ in range(channels)]
        try:
            caught_up = 0
            all_caught_up = asyncio.Event()

            async def follow(index: int) -> list[int]:
                nonlocal caught_up
                stub = build_log_pb2_grpc.BuildLogServiceStub(chans[index % channels])
                got: list[int] = []
                async for response in stub.StreamBuildLogs(
                    L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=120
                ):
                    if response.caught_up:
                        caught_up += 1
                        if caught_up == followers:
                            all_caught_up.set()
                    got.extend(log.sequence for log in response.logs)
                return got

            tasks = [asyncio.create_task(follow(i)) for i in range(followers)]
            await asyncio.wait_for(all_caught_up.wait(), 90)
            loop = asyncio.get_running_loop()
            for batch in range(5):
                await loop.run_in_executor(None, append, api, build.id, lines(*[f"{batch}.{i}" for i in range(20)]))
            await loop.run_in_executor(None, finish, api, build.id)
            return await asyncio.wait_for(asyncio.gather(*tasks), 90)
        finally:
            for chan in chans:
                await chan.close()

    results = asyncio.run(run())
    assert len(results) == followers
    assert all(got == list(range(1, 101)) for got in results)
