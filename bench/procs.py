"""Processes under test: `python -m server` as an operator runs it, and the
bench's own helpers, each with its stderr in a file under .data/bench-run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.env import ROOT, RUN_DIR
from tests.support import admin_token, open_channel

LISTENING = re.compile(r"listening on [^\"\s]*:(\d+)")


class Proc:
    """`token` is the admin token the bench's clients send to it: the
    server's, and the same to a floor (which ignores it), so that both see
    the same requests."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], token: str | None = None) -> None:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.token = token
        self.log_path = RUN_DIR / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.port = 0
        self.http_port = 0   # the HTTP port of a server (HTTP_ADDRESS)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_env(self) -> dict[str, str]:
        """The environment that gives a client process of it the token (BUILDPLATFORM_TOKEN)."""
        return {} if self.token is None else {"BUILDPLATFORM_TOKEN": self.token}

    def wait_listening(self, timeout: float = 60) -> Proc:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = LISTENING.search(self.log_path.read_text())
            if match:
                self.port = int(match.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{self.log_path.read_text()[-3000:]}")

    def rss_mb(self) -> float:
        """Resident memory of the process now (VmRSS), in MB (10^6 bytes, as the target)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
        return 0.0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server(name: str, database_url: str, **env: str) -> Proc:
    """`python -m server` with the operator defaults (INFO access log, pool
    10+10, 15 s heartbeats) unless `env` overrides them; returns once its
    health service says SERVING (at LOG_LEVEL=WARNING nothing is logged).
    Its `token` is an admin token of `database_url` (migrated already)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port, http_port = free_port(), free_port()
    proc = Proc(name, ["-m", "server"], {
        "DATABASE_URL": database_url, "GRPC_ADDRESS": f"127.0.0.1:{port}", "HTTP_ADDRESS": f"127.0.0.1:{http_port}",
        # Metrics on, on a port of its own (METRICS_ADDRESS= measures them off).
        "METRICS_ADDRESS": os.environ.get("METRICS_ADDRESS", "127.0.0.1:0"),
        # The bench database's first admin token, never the developer's .data/admin-token.
        "AUTH_BOOTSTRAP_TOKEN_FILE": str(RUN_DIR / "admin-token"),
        # No archiver and no janitor unless a bench asks for them (bench.lifecycle):
        # the loaded builds are finished and up to a year old, and archiving or
        # expiring them would spend the server's CPU during a figure whose bare
        # handler does neither.
        "ARCHIVE": "false", "JANITOR_SECONDS": "0", **env,
    }, token=admin_token(database_url))
    proc.port, proc.http_port = port, http_port
    deadline = time.monotonic() + 60
    with open_channel(proc.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and proc.proc.poll() is None:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return proc
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"{name} did not become SERVING:\n{proc.log_path.read_text()[-3000:]}")


def access_codes(proc: Proc) -> dict[str, int]:
    """Status codes counted from the server's access log (one JSON line per RPC)."""
    import json

    codes: dict[str, int] = {}
    with proc.log_path.open() as lines:
        for line in lines:
            if '"msg": "rpc"' not in line:
                continue
            code = json.loads(line).get("code", "?")
            codes[code] = codes.get(code, 0) + 1
    return codes
