"""Network faults between the service and PostgreSQL, injected by a TCP proxy
in the test (tests.support.FaultyLink) on the service's DATABASE_URL:
latency, every connection reset at once, a blackhole (nothing forwarded,
nothing closed), and new connections held silent (a cancel request that
never arrives). Calls answer within their deadlines; nothing acknowledged is
lost or repeated; a call's deadline stops its database work even when the
client-side cancellation cannot reach PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import psycopg
import pytest
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_pb2
from grpc_health.v1 import health_pb2

from server import migrate
from server.store.db import CONNECT_OPTIONS
from tests.e2e.streaming import Appender, finish, new_build, start_running
from tests.support import FaultyLink, OwnPostgres, ServerProcess, eventually, health, stubs

DB_TIMEOUT = 2.0
SETTINGS = {"DB_TIMEOUT_SECONDS": str(DB_TIMEOUT), "DB_POOL_TIMEOUT_SECONDS": "1", "HEALTH_CHECK_SECONDS": "0.5",
            "LOG_LEVEL": "WARNING"}
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def linked() -> Iterator[tuple[OwnPostgres, FaultyLink, ServerProcess]]:
    """PostgreSQL of its own, the proxy in front of it, and a server whose
    DATABASE_URL goes through the proxy."""
    directory = Path(tempfile.mkdtemp(prefix="bp-faults-"))
    try:
        pg = OwnPostgres(directory / "pg")
        migrate.upgrade(pg.admin_url)
        link = FaultyLink(pg.port)
        server = ServerProcess(f"postgresql://postgres@127.0.0.1:{link.port}/postgres",
                               env={"PYTHONFAULTHANDLER": "1", **SETTINGS}).start()
        try:
            eventually(lambda: health(server.address) == SERVING, "the service to serve")
            yield pg, link, server
        finally:
            link.close()
            code = server.stop()
            pg.close()
        assert code == 0, server.log()[-3000:]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _lock_waiters(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as probe:
        row = probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'buildplatform'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_an_append_cut_by_its_deadline_is_never_written_even_when_the_cancel_cannot_arrive(linked):
    """The client-side cancellation of a statement is a new connection to
    PostgreSQL; held silent here, it never arrives: only the deadline sent
    with the statement (lock_timeout) ends the lock wait."""
    pg, link, server = linked
    with server.channel() as channel:
        api = stubs(channel)
        build = new_build(api)
        start_running(api, build.id)
        entry = L.LogEntry(level=L.LOG_LEVEL_INFO, message="late")
        with psycopg.connect(pg.admin_url) as holder:
            holder.execute("SELECT 1 FROM builds WHERE id = %s FOR UPDATE", (build.id,))
            link.hold_new = True
            request = L.AppendBuildLogsRequest(build_id=build.id, entries=[entry])

            def one(_: int) -> grpc.StatusCode:
                try:
                    api.logs.AppendBuildLogs(request, timeout=0.02)
                except grpc.RpcError as error:
                    return error.code()  # type: ignore[no-any-return]
                return grpc.StatusCode.OK

            with ThreadPoolExecutor(10) as pool:
                codes = list(pool.map(one, range(10)))
            assert set(codes) <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}, codes
            time.sleep(1.0)
            assert _lock_waiters(pg.admin_url) == 0
            holder.rollback()
        link.hold_new = False
        time.sleep(1.0)
        with psycopg.connect(pg.admin_url) as conn:
            row = conn.execute("SELECT count(*) FROM build_logs WHERE build_id = %s", (build.id,)).fetchone()
        assert row == (0,)   # the caller was told the appends failed: none was written


def test_resets_and_a_blackhole_cost_calls_their_deadline_and_lose_nothing(linked):
    _, link, server = linked
    with server.channel() as channel:
        api = stubs(channel)
        builds = [new_build(api) for _ in range(2)]
        for build in builds:
            start_running(api, build.id)
        appenders = [Appender(api, build.id, batches=80, lines=5) for build in builds]
        threads = [threading.Thread(target=a.run, daemon=True) for a in appenders]
        for thread in threads:
            thread.start()
        eventually(lambda: all(len(a.acknowledged) >= 50 for a in appenders), "the appenders to get going")

        link.latency = 0.05   # slow, but within every deadline
        got = api.builds.GetBuild(build_pb2.GetBuildRequest(id=builds[0].id), timeout=5)
        assert got.build.id == builds[0].id
        link.latency = 0.0

        link.reset()   # every connection to PostgreSQL dies at once, mid-append
        eventually(lambda: all(len(a.acknowledged) >= 150 for a in appenders), "appends after the reset")

        link.blackhole = True
        answered: list[tuple[float, grpc.StatusCode]] = []
        for _ in range(3):
            began = time.monotonic()
            try:
                api.builds.GetBuild(build_pb2.GetBuildRequest(id=builds[0].id), timeout=DB_TIMEOUT + 3)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
            answered.append((time.monotonic() - began, code))
        eventually(lambda: health(server.address) != SERVING, "health to leave SERVING in the blackhole")
        link.blackhole = False
        link.reset()   # what a blackhole that lifts leaves: connections the kernel gave up on
        recovered = time.monotonic()
        eventually(lambda: health(server.address) == SERVING, "health to serve again")
        print(f"\nGetBuild in the blackhole: {[(round(s, 2), c.name) for s, c in answered]}; "
              f"SERVING again {time.monotonic() - recovered:.2f}s after it lifted")
        # Answered by the server within DB_TIMEOUT_SECONDS (+ scheduling slack), never by the client's deadline.
        assert all(code == grpc.StatusCode.UNAVAILABLE and took < DB_TIMEOUT + 1.5 for took, code in answered), answered

        for thread in threads:
            thread.join(120)
        for appender in appenders:
            finish(api, appender.build_id)
            assert appender.acknowledged == appender.expected(), appender.failures
            assert {code for code, _ in appender.failures} <= {grpc.StatusCode.UNAVAILABLE}
            stored = api.logs.ListBuildLogs(
                L.ListBuildLogsRequest(build_id=appender.build_id, page_size=1000), timeout=10).logs
            assert [(log.sequence, log.message) for log in stored] == appender.expected()   # none lost, none repeated


# --- a peer that vanished: packets dropped, nothing closed --------------------------------
#
# The proxy's blackhole above still has a kernel that acknowledges every
# packet: what a stalled PostgreSQL looks like. A primary whose machine died,
# or a partition, acknowledges nothing, and only TCP keepalives (an idle
# connection) or TCP_USER_TIMEOUT (one with data unacknowledged) find it:
# without them a connection to a vanished peer stays ESTABLISHED for hours.
# The kernel drops the packets here (iptables, on the test's own PostgreSQL
# port only), which is the one way to make a peer vanish on one machine.

# Keepalive probes start after keepalives_idle without traffic and would
# give up after keepalives_count lost probes, but on Linux TCP_USER_TIMEOUT,
# when set, decides instead (tcp(7)): a connection is dropped once nothing
# was acknowledged for tcp_user_timeout, whether it was idle (probes
# unanswered) or sending (data unacknowledged). Hence the bound: the larger.
KEEPALIVE_BOUND = max(
    CONNECT_OPTIONS["keepalives_idle"] + CONNECT_OPTIONS["keepalives_interval"] * CONNECT_OPTIONS["keepalives_count"],
    CONNECT_OPTIONS["tcp_user_timeout"] / 1000,
)


ESTABLISHED = "01"   # /proc/net/tcp's st column (include/net/tcp_states.h)


def _client_sockets(port: int, *, established: bool = False) -> set[int]:
    """Local ports of the TCP sockets to 127.0.0.1:`port` from this
    machine's clients (the service: the test opens none meanwhile): the
    established ones, or those in any state the kernel still keeps (one
    closed but its FIN not acknowledged included; a socket the kernel gave
    up on is gone)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if int(remote.split(":")[1], 16) == port and (state == ESTABLISHED or not established):
            found.add(int(local.split(":")[1], 16))
    return found


@contextmanager
def _dropped(port: int) -> Iterator[None]:
    """Every packet to or from `port` dropped by the kernel, both ways."""
    iptables = shutil.which("iptables")
    assert iptables, "this test needs iptables (make test installs it when root: apt-get install iptables)"
    rules = [["OUTPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP"],
             ["OUTPUT", "-p", "tcp", "--sport", str(port), "-j", "DROP"]]
    for rule in rules:
        subprocess.run([iptables, "-w", "-I", *rule], check=True, capture_output=True)
    try:
        yield
    finally:
        for rule in rules:
            subprocess.run([iptables, "-w", "-D", *rule], check=False, capture_output=True)


@pytest.mark.iptables
def test_connections_to_a_vanished_database_are_dropped_within_the_keepalive_bound():
    directory = Path(tempfile.mkdtemp(prefix="bp-vanish-"))
    try:
        pg = OwnPostgres(directory / "pg")
        migrate.upgrade(pg.admin_url)
        server = ServerProcess(pg.admin_url, env=SETTINGS).start()
        try:
            eventually(lambda: health(server.address) == SERVING, "the service to serve")
            with server.channel() as channel:
                api = stubs(channel)
                build = new_build(api)
                start_running(api, build.id)
                appender = Appender(api, build.id, batches=20, lines=5)
                appender.run()
                assert appender.acknowledged == appender.expected(), appender.failures
                before = _client_sockets(pg.port, established=True)
                assert len(before) >= 2, before   # the pools' and the LISTEN connection

                gone: dict[int, float] = {}
                with _dropped(pg.port):
                    began = time.monotonic()
                    while set(gone) != before and time.monotonic() - began < KEEPALIVE_BOUND + 20:
                        left = _client_sockets(pg.port)
                        gone.update({port: time.monotonic() - began for port in before - left if port not in gone})
                        time.sleep(0.1)
                    assert health(server.address) != SERVING
                print(f"\n{len(before)} connections to the vanished database; each dropped after "
                      f"{sorted(round(t, 1) for t in gone.values())} s (bound {KEEPALIVE_BOUND:g} s)")
                # Without keepalives they would still be ESTABLISHED; the slack
                # is the kernel's timer granularity on a loaded machine.
                assert set(gone) == before and max(gone.values()) < KEEPALIVE_BOUND + 5, (gone, KEEPALIVE_BOUND)

                # The database is back: the service reconnects on its own, and nothing acknowledged was lost.
                eventually(lambda: health(server.address) == SERVING, "health to serve again", wait=60)
                last = len(appender.expected()) + 1
                api.logs.AppendBuildLogs(L.AppendBuildLogsRequest(
                    build_id=build.id, first_sequence=last,
                    entries=[L.LogEntry(level=L.LOG_LEVEL_INFO, message="after the partition")]), timeout=10)
                finish(api, build.id)
                stored = api.logs.ListBuildLogs(L.ListBuildLogsRequest(build_id=build.id, page_size=1000), timeout=10)
                assert [(log.sequence, log.message) for log in stored.logs] == [
                    *appender.expected(), (last, "after the partition")]
        finally:
            code = server.stop()
            pg.close()
        assert code == 0, server.log()[-3000:]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
