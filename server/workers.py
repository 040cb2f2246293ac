"""WORKERS=N: N serving processes on one port, supervised by this one.

One Python process serves on one core (the event loop and protobuf work
hold the GIL), so a host with more cores runs several. The supervisor:

- migrates once (with --migrate), and starts the embedded PostgreSQL when
  DATABASE_URL is unset, before any worker starts; the workers only check
  the schema;
- gives both ports (GRPC_ADDRESS, HTTP_ADDRESS) a fixed number (a port 0
  is replaced by a free one, so that all workers share it) and starts N
  workers, `python -m server` with
  REUSE_PORT=true: the kernel spreads new connections over them
  (SO_REUSEPORT);
- restarts a worker that exits while it should be serving, after a pause
  that doubles while workers keep crashing (1 s up to 30 s), and logs it;
- with METRICS_ADDRESS set, serves every worker's metrics there itself
  (the workers record into PROMETHEUS_MULTIPROC_DIR; server.telemetry.endpoint)
  and tells the metrics when a worker has exited (`exited`);
- on SIGTERM or SIGINT sends SIGTERM to every worker (each drains its calls
  for SHUTDOWN_GRACE_SECONDS, as a single process does), waits for them, and
  kills what is left after the grace period and 10 s more.

Each worker answers health for itself, so a load balancer's check reaches a
live process; a worker that crashed stops receiving connections until it is
back. Every log line of a worker carries `"worker": <n>`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("server.lifecycle")

FIRST_PAUSE = 1.0
LONGEST_PAUSE = 30.0
STABLE_SECONDS = 30.0   # a worker that ran this long before dying was not crash-looping


def count(setting: int) -> int:
    """WORKERS as a number of processes: 0 means one per core."""
    return setting if setting > 0 else (os.cpu_count() or 1)


def fixed_port(address: str) -> str:
    """`address` with a port 0 replaced by a free port, so that every worker binds the same one."""
    host, _, port = address.rpartition(":")
    if port != "0":
        return address
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host.strip("[]"), 0))
        return f"{host}:{probe.getsockname()[1]}"


@dataclass
class Worker:
    number: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    pause: float = FIRST_PAUSE
    restart_at: float | None = None


@dataclass
class Supervisor:
    workers: int
    env: dict[str, str]
    grace: float
    stopping: bool = False
    pool: list[Worker] = field(default_factory=list)
    exited: Callable[[int], None] | None = None   # told the pid of a worker that exited

    def start(self, worker: Worker) -> None:
        env = {**self.env, "WORKER": str(worker.number)}
        worker.process = subprocess.Popen([sys.executable, "-m", "server"], env=env)
        worker.started = time.monotonic()
        worker.restart_at = None
        log.info("worker %d started (pid %d)", worker.number, worker.process.pid,
                 extra={"worker": worker.number, "pid": worker.process.pid})

    def run(self) -> int:
        def stop(signum: int, frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.pool = [Worker(number) for number in range(1, self.workers + 1)]
        for worker in self.pool:
            self.start(worker)
        log.info("supervising %d workers", self.workers, extra={"workers": self.workers})
        while not self.stopping:
            self._watch()
            time.sleep(0.1)
        return self._stop()

    def _watch(self) -> None:
        now = time.monotonic()
        for worker in self.pool:
            if worker.restart_at is not None:
                if now >= worker.restart_at:
                    self.start(worker)
                continue
            assert worker.process is not None
            code = worker.process.poll()
            if code is None:
                continue
            if self.exited is not None:
                self.exited(worker.process.pid)
            if now - worker.started >= STABLE_SECONDS:
                worker.pause = FIRST_PAUSE
            log.warning("worker %d (pid %d) exited with %s; restarting it in %.0fs",
                        worker.number, worker.process.pid, _exit(code), worker.pause,
                        extra={"worker": worker.number, "pid": worker.process.pid, "exit": code})
            worker.restart_at = now + worker.pause
            worker.pause = min(worker.pause * 2, LONGEST_PAUSE)

    def _stop(self) -> int:
        running = [w.process for w in self.pool if w.process is not None and w.process.poll() is None]
        log.info("shutting down %d workers", len(running))
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 10
        failed = 0
        for process in running:
            try:
                code = process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            failed += code != 0
        log.info("stopped")
        return 1 if failed else 0


def _exit(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"
