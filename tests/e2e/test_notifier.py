"""How replicas learn of new lines without NOTIFY in the appends' commits
(server.live.notifier): a coalescing notifier per process, woken followers
in the writing process at commit, and the slow poll of followed builds as
the safety net when a process dies between commit and notify.

The bounds (docs/streaming.md#how-replicas-learn-of-new-lines): a line
reaches a follower on another replica within NOTIFY_TICK_SECONDS plus a
notification's and a read's round trips (a few ms); with its notification
lost, within FEED_POLL_SECONDS plus a read. The machine running the tests is
shared and loaded, so the assertions allow a second of scheduling beside
each bound.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from buildplatform.v1 import build_log_pb2 as L

from server.live.notifier import FAULT_ENV, PAYLOAD_BYTES, payloads
from tests.e2e.streaming import append, lines, start_running
from tests.support import ServerProcess, running_server, stubs

SLACK = 1.0       # seconds of scheduling on a loaded machine, beside a bound
POLL = 0.5        # FEED_POLL_SECONDS of the following replica here


def _next_lines(stream: Iterator[L.StreamBuildLogsResponse]) -> list[str]:
    response = next(stream)
    while not response.logs:
        response = next(stream)
    return [log.message for log in response.logs]


def _collect(stream: Iterator[L.StreamBuildLogsResponse], count: int) -> list[str]:
    got: list[str] = []
    while len(got) < count:
        got += _next_lines(stream)
    return got


@pytest.fixture(scope="module")
def follower_replica(database_url: str) -> Iterator[ServerProcess]:
    """A second replica that polls its followed builds every POLL seconds."""
    with running_server(database_url, FEED_POLL_SECONDS=str(POLL)) as proc:
        yield proc


def test_payloads_name_every_build_and_stay_below_postgresqls_limit() -> None:
    changed = {f"c{index:031d}": index * 1000 for index in range(1000)}
    texts = payloads(changed)
    assert len(texts) > 1
    assert all(len(text.encode()) < min(PAYLOAD_BYTES + 1, 8000) for text in texts)
    words = " ".join(texts).split(" ")
    assert dict(zip(words[::2], map(int, words[1::2]), strict=True)) == changed


def test_a_follower_on_another_replica_gets_each_line_within_the_notification_bound(api, follower_replica, build):
    """20 appends one after the other through the session's server; the
    follower on the other replica sees each within the tick's bound (far
    under FEED_POLL_SECONDS: the notification, not the poll, carried it)."""
    start_running(api, build.id)
    with follower_replica.channel() as channel:
        other = stubs(channel)
        stream = other.logs.StreamBuildLogs(L.StreamBuildLogsRequest(build_id=build.id, follow=True), timeout=60)
        assert next(stream).caught_up
        delays = []
        for index in range(20):
            append(api, build.id, lines(f"line {index}"))
            acknowledged = time.monotonic()
            assert _next_lines(stream) == [f"line {index}"]
            delays.append(time.monotonic() - acknowledged)
        stream.cancel()
    delays.sort()
    # Half of them well under the poll period: notifications carry the lines.
    assert delays[len(delays) // 2] < POLL, delays
    assert delays[-1] < POLL + SLACK, delays


def test_a_process_killed_between_commit_and_notify_loses_no_line_to_other_replicas(
    database_url, follower_replica, make_build
):
    """A writer replica that commits appends but never notifies (the test
    hook stalls its notifier), then SIGKILLed: the follower on the other
    replica still gets every line, exactly once and in order, within the
    poll bound. A follower in the writer's own process got them at commit,
    with no notification and no poll (its poll period is a minute)."""
    writer = ServerProcess(database_url, env={FAULT_ENV: "stall", "FEED_POLL_SECONDS": "60"}).start()
    try:
        build = make_build()
        with writer.channel() as writer_channel, follower_replica.channel() as follower_channel:
            near, far = stubs(writer_channel), stubs(follower_channel)
            start_running(near, build.id)
            request = L.StreamBuildLogsRequest(build_id=build.id, follow=True)
            local_stream = near.logs.StreamBuildLogs(request, timeout=60)
            far_stream = far.logs.StreamBuildLogs(request, timeout=60)
            assert next(local_stream).caught_up and next(far_stream).caught_up
            sent = [f"line {index}" for index in range(30)]
            for index in range(0, 30, 10):
                append(near, build.id, lines(*sent[index:index + 10]))
            started = time.monotonic()
            assert _collect(local_stream, 30) == sent   # woken at commit, in its own process
            local_stream.cancel()
            assert writer.stop(signal.SIGKILL) == -signal.SIGKILL
            assert _collect(far_stream, 30) == sent     # by the poll: nothing announced them
            waited = time.monotonic() - started
            far_stream.cancel()
    finally:
        writer.stop(signal.SIGKILL)
    assert waited < POLL + SLACK + 1.0, f"the other replica got the lines after {waited:.2f}s"
