"""A rolling restart under load ends no call CANCELLED: a server that gets
SIGTERM while many clients call it answers every call it took OK, or
UNAVAILABLE (retryable: a client's retry policy carries it to another
replica); calls it never took fail UNAVAILABLE at the client (GOAWAY, then a
refused connection). CANCELLED, which no client retries, is never seen.
The clients behave as a retry policy does: after UNAVAILABLE with RetryInfo
they wait the advised delay before their next call."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import grpc
from buildplatform.v1 import build_pb2, project_pb2, user_pb2

from server import migrate
from tests.e2e.expect import read
from tests.support import WAIT, ServerProcess, create_database, drop_database, stubs

THREADS = 200


def test_sigterm_under_load_answers_ok_or_unavailable_never_cancelled(postgres):
    url = create_database(postgres, prefix="bp_restart")
    migrate.upgrade(url)
    server = ServerProcess(url, env={"PYTHONFAULTHANDLER": "1", "LOG_LEVEL": "WARNING"}).start()
    try:
        with server.channel() as channel:
            api = stubs(channel)
            user = api.users.CreateUser(user_pb2.CreateUserRequest(user=user_pb2.User(clerk_id="r", email="r@example.com"))).user
            project = api.projects.CreateProject(project_pb2.CreateProjectRequest(project=project_pb2.Project(user_id=user.id, name="p"))).project
            build = api.builds.CreateBuild(build_pb2.CreateBuildRequest(
                build=build_pb2.Build(user_id=user.id, project_id=project.id, app_spec="x"))).build
            request = build_pb2.GetBuildRequest(id=build.id)
            codes: Counter[grpc.StatusCode] = Counter()
            details: dict[grpc.StatusCode, str] = {}
            advised: list[float] = []
            lock = threading.Lock()
            stop = threading.Event()

            def caller() -> None:
                # Until the server is gone: a refused connection is UNAVAILABLE too.
                while not stop.is_set():
                    try:
                        api.builds.GetBuild(request, timeout=WAIT)
                        code = grpc.StatusCode.OK
                    except grpc.RpcError as error:
                        failed = read(error)
                        code = failed.code
                        details.setdefault(code, failed.message)
                        if failed.retry_delay:
                            with lock:
                                advised.append(failed.retry_delay)
                            time.sleep(failed.retry_delay)   # as a retry policy does: the server's advice
                    with lock:
                        codes[code] += 1
                    if server.proc is not None and server.proc.poll() is not None and code != grpc.StatusCode.OK:
                        return

            threads = [threading.Thread(target=caller, daemon=True) for _ in range(THREADS)]
            for thread in threads:
                thread.start()
            time.sleep(3.0)   # under load
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(WAIT * 2) == 0, server.log()[-3000:]
            time.sleep(0.5)
            stop.set()
            for thread in threads:
                thread.join(WAIT)
        print(f"\ncalls by status across the restart: {dict(codes)}")
        assert codes[grpc.StatusCode.OK] > THREADS   # the load was real
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, (dict(codes), details)
        assert advised, "the server refused calls while shutting down, with retry advice"
    finally:
        server.stop()
        drop_database(postgres, url)
