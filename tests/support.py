"""Test harness: a real PostgreSQL and real server processes on real ports."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import psycopg
from buildplatform.v1 import (
    app_spec_pb2_grpc,
    build_event_pb2_grpc,
    build_log_pb2_grpc,
    build_pb2_grpc,
    chat_session_pb2_grpc,
    project_pb2_grpc,
    user_pb2_grpc,
)
from grpc_health.v1 import health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on [^\"]*:(\d+)")


def start_database() -> tuple[Any, str]:
    """TEST_DATABASE_URL, or an embedded PostgreSQL in .data/test-postgres."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return None, url
    from server import embedded

    handle, url = embedded.start(ROOT / ".data" / "test-postgres")
    # Test data is disposable: trade durability for speed.
    handle.psql("ALTER SYSTEM SET fsync = off")
    handle.psql("ALTER SYSTEM SET synchronous_commit = off")
    handle.psql("ALTER SYSTEM SET full_page_writes = off")
    handle.psql("SELECT pg_reload_conf()")
    return handle, url


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def create_database(admin_url: str, prefix: str = "bp_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class ServerProcess:
    """`python -m server` in a subprocess, as an operator would run it."""

    database_url: str
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    lines: list[str] = field(default_factory=list)
    _pump: threading.Thread = field(init=False, repr=False)

    def start(self, timeout: float = 30) -> ServerProcess:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "GRPC_ADDRESS": "127.0.0.1:0",
            "LOG_LEVEL": "INFO",
            "STREAM_HEARTBEAT_SECONDS": "1",
            "HEALTH_CHECK_SECONDS": "0.5",
            "SHUTDOWN_GRACE_SECONDS": "3",
            **self.env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", *self.args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line)
                match = LISTENING.search(line)
                if match and not ready.is_set():
                    self.port = int(match.group(1))
                    ready.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.2)
                raise RuntimeError(f"server did not start:\n{''.join(self.lines)}")
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, sig: int = 15, timeout: float = 15) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._pump.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code

    def log(self) -> str:
        return "".join(self.lines)


@contextmanager
def running_server(database_url: str, **env: str) -> Iterator[ServerProcess]:
    """A server for the duration of the block, which must then exit cleanly:
    a crash (a signal, a non-zero exit) fails the test with the server's log."""
    proc = ServerProcess(database_url, env={"PYTHONFAULTHANDLER": "1", **env}).start()
    try:
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, f"the server exited with {code}:\n{proc.log()[-5000:]}"


def stubs(channel: grpc.Channel) -> SimpleNamespace:
    return SimpleNamespace(
        users=user_pb2_grpc.UserServiceStub(channel),
        projects=project_pb2_grpc.ProjectServiceStub(channel),
        builds=build_pb2_grpc.BuildServiceStub(channel),
        logs=build_log_pb2_grpc.BuildLogServiceStub(channel),
        events=build_event_pb2_grpc.BuildEventServiceStub(channel),
        chats=chat_session_pb2_grpc.ChatSessionServiceStub(channel),
        specs=app_spec_pb2_grpc.AppSpecServiceStub(channel),
        health=health_pb2_grpc.HealthStub(channel),
    )
