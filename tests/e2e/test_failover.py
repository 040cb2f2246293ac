"""A primary lost, nothing lost: a real pair of PostgreSQL servers on this
machine (the embedded PostgreSQL 18's initdb, pg_basebackup -R, synchronous
replication), the service on the multi-host URL
`postgresql://…@primary,standby/postgres?target_session_attrs=read-write`
(migrated with --migrate, its admin token made by `python -m server tokens
create`, both on that URL), appenders and followers through the service;
the primary is killed with SIGKILL mid-append and the standby promoted.

Asserted: no acknowledged line is lost and none is repeated; appends in
flight are answered UNAVAILABLE with retry advice and the appender's retry
with the same first_sequence completes them; followers ride out the switch
or end UNAVAILABLE and resume from their cursor, and see every line exactly
once; the pools, the LISTEN connection and the health probe are on the new
primary without a restart; the service is SERVING again within SERVING_BOUND
seconds of the kill (printed: the measured time)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_pb2
from grpc_health.v1 import health_pb2

from tests.e2e.streaming import Appender, Follower, finish, new_build, start_running
from tests.support import (
    ROOT,
    OwnPostgres,
    OwnStandby,
    ServerProcess,
    eventually,
    health,
    open_channel,
    stubs,
    synchronous_pair,
)

BUILDS = 3
BATCHES = 60          # per build
LINES = 5             # per batch
KILL_AFTER = 15       # batches acknowledged on every build before the primary is killed
# A generous bound, not a performance target: promotion took up to about 5 s
# here, then health needs one HEALTH_CHECK_SECONDS round to see the new primary.
SERVING_BOUND = 30.0
SETTINGS = {
    "DB_TIMEOUT_SECONDS": "2", "DB_POOL_TIMEOUT_SECONDS": "1", "HEALTH_CHECK_SECONDS": "0.5",
    "LOG_LEVEL": "WARNING",
}


@pytest.fixture
def pair() -> Iterator[tuple[OwnPostgres, OwnStandby]]:
    # Not under pytest's temporary directory: the servers run as another
    # user, who must traverse the parent folders (see test_outages.py).
    directory = Path(tempfile.mkdtemp(prefix="bp-failover-"))
    os.chmod(directory, 0o755)
    try:
        primary, standby = synchronous_pair(directory)
        yield primary, standby
        for server in (standby, primary):
            server.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _tokens_create(url: str) -> str:
    """An admin token made by the operator's command, on the multi-host URL."""
    env = {**os.environ, "DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "server", "tokens", "create", "failover-admin", "--scopes", "admin"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_primary_killed_mid_append_loses_and_repeats_nothing(pair):
    primary, standby = pair
    url = (f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/postgres"
           "?target_session_attrs=read-write")
    server = ServerProcess(url, env={"PYTHONFAULTHANDLER": "1", **SETTINGS}, args=["--migrate"]).start(timeout=60)
    try:
        eventually(lambda: health(server.address) == health_pb2.HealthCheckResponse.SERVING, "the service to serve")
        token = _tokens_create(url)
        with open_channel(server.address, token=token) as channel:
            api = stubs(channel)
            builds = [new_build(api) for _ in range(BUILDS)]
            for build in builds:
                start_running(api, build.id)
            appenders = [Appender(api, build.id, batches=BATCHES, lines=LINES) for build in builds]
            followers = [Follower(api, build.id) for build in builds]
            threads = [threading.Thread(target=worker.run, daemon=True) for worker in (*appenders, *followers)]
            for thread in threads:
                thread.start()
            eventually(lambda: all(len(a.acknowledged) >= KILL_AFTER * LINES for a in appenders),
                       "the appenders to get going", wait=60)

            primary.kill()   # mid-append: the appenders do not pause
            killed = time.monotonic()
            standby.promote()
            promoted = time.monotonic() - killed
            serving = None
            while time.monotonic() - killed < SERVING_BOUND + 5:
                if health(server.address) == health_pb2.HealthCheckResponse.SERVING:
                    # Health is checked every HEALTH_CHECK_SECONDS: right after the
                    # kill it may still say SERVING while the pools hold connections
                    # to the dead primary, which answer UNAVAILABLE (retry) once each.
                    try:
                        probe = api.builds.GetBuild(build_pb2.GetBuildRequest(id=builds[0].id), timeout=5)
                    except grpc.RpcError as error:
                        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                        time.sleep(0.1)
                        continue
                    if probe.build.id == builds[0].id:
                        serving = time.monotonic() - killed
                        break
                time.sleep(0.1)
            print(f"\nfailover: standby promoted {promoted:.2f}s after the kill; "
                  f"the service answered SERVING and a GetBuild {serving}s after the kill (bound {SERVING_BOUND:g}s)")
            assert serving is not None and serving < SERVING_BOUND, server.log()[-3000:]

            for thread in threads[:BUILDS]:
                thread.join(120)
            for build in builds:
                finish(api, build.id)
            for thread in threads[BUILDS:]:
                thread.join(120)

            for appender, follower in zip(appenders, followers, strict=True):
                expected = appender.expected()
                assert appender.acknowledged == expected, appender.failures   # every batch completed, in order
                stored = api.logs.ListBuildLogs(
                    L.ListBuildLogsRequest(build_id=appender.build_id, page_size=1000), timeout=10).logs
                assert [(log.sequence, log.message) for log in stored] == expected   # none lost, none repeated
                assert follower.seen == expected, follower.ended   # exactly once, in order, across the failover
            failures = [failure for appender in appenders for failure in appender.failures]
            print(f"append failures across the failover: {len(failures)}; "
                  f"retries found already written: {sum(a.retried_written for a in appenders)}; "
                  f"follower stream ends: {[f.ended for f in followers]}")
            assert failures, "the kill interrupted no append: it was not mid-append"
            assert {code for code, _ in failures} == {grpc.StatusCode.UNAVAILABLE}
            assert all(delay for _, delay in failures), "every UNAVAILABLE carries retry advice (RetryInfo)"
            # A stream either rode out the switch (its reads retried on the new
            # primary) or ended UNAVAILABLE and was resumed from its cursor:
            # either way each line arrived exactly once (asserted above).
            assert all(set(f.ended) <= {grpc.StatusCode.UNAVAILABLE} for f in followers)
            for follower in followers:   # each end named the cursor to resume from, with retry advice
                assert all(given == str(cursor) and delay for cursor, given, delay in follower.cursors), follower.cursors

            # Without a restart, the pools and the LISTEN connection are on the new primary.
            def connected(name: str) -> bool:
                with psycopg.connect(standby.admin_url, autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()
                return row is not None and row[0] > 0

            for name in ("buildplatform", "buildplatform-listen", "buildplatform-health"):
                eventually(lambda name=name: connected(name), f"a {name} connection to the new primary")
        assert health(server.address) == health_pb2.HealthCheckResponse.SERVING
    finally:
        code = server.stop()
    assert code == 0, server.log()[-3000:]
