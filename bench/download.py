"""Issue 14, section 4: download of a 1,000,000-line log, each figure beside
its floor in the same run.

- GET /builds/{id}/logs.txt with curl (the real client, to /dev/null):
  bytes/s of the whole text, as written and with ?ansi=strip&timestamps=true
  &levels=true, gzip (curl --compressed), and a Range from the middle (the
  offset marks of the first download make it start there);
- ReadBuildLogText of the same text (the generated stub, chunks joined);
- the floor: the same build's messages (and a "\\n" each) out of PostgreSQL
  with COPY ... TO STDOUT, in this process: how fast the bytes can leave
  the database at all;
- the server's RSS, idle and at its peak during each download (sampled every
  20 ms): a download streams, so the peak stays far below the text's size.
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

import psycopg
from buildplatform.v1 import build_log_pb2 as L
from buildplatform.v1 import build_log_pb2_grpc

from bench import procs
from bench.feeds import LINES, load_lines
from bench.streams import Figures, new_builds
from tests.support import open_channel


class PeakRss:
    """The largest RSS of `proc` while the block runs, sampled every 20 ms."""

    def __init__(self, proc: procs.Proc) -> None:
        self.proc = proc
        self.peak = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.proc.rss_mb())
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(5)
        self.peak = max(self.peak, self.proc.rss_mb())


def _curl(server: procs.Proc, build_id: str, query: str, *args: str) -> tuple[int, float]:
    """(bytes received, seconds) of one curl GET of the text to /dev/null."""
    done = subprocess.run(
        ["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download} %{time_total}",
         "-H", f"Authorization: Bearer {server.token}", *args,
         f"http://127.0.0.1:{server.http_port}/builds/{build_id}/logs.txt{query}"],
        capture_output=True, text=True, timeout=600, check=True,
    )
    size, seconds = done.stdout.split()
    return int(size), float(seconds)


def _copy_floor(url: str, build_id: str) -> tuple[int, float]:
    """(bytes, seconds): the messages out of PostgreSQL with COPY (text
    format: each row is its message and a newline, the text's bytes when no
    message holds a character COPY escapes, as the bench's do not)."""
    started = time.perf_counter()
    total = 0
    with psycopg.connect(url) as conn, conn.cursor().copy(
        "COPY (SELECT message FROM build_logs WHERE build_id = %s ORDER BY seq) TO STDOUT", (build_id,)
    ) as copy:
        for block in copy:
            total += len(block)
    return total, time.perf_counter() - started


def _rpc(server: procs.Proc, build_id: str) -> tuple[int, float]:
    started = time.perf_counter()
    total = 0
    with open_channel(server.address, token=server.token) as channel:
        stub = build_log_pb2_grpc.BuildLogServiceStub(channel)
        for response in stub.ReadBuildLogText(L.ReadBuildLogTextRequest(build_id=build_id), timeout=600):
            total += len(response.data)
    return total, time.perf_counter() - started


def download(url: str, figures: Figures, *, lines: int = LINES) -> None:
    (build_id,) = new_builds(url, 1)
    print(f"  loading {lines:,} lines ...", flush=True)
    load_lines(url, build_id, lines)
    server = procs.server("server-download", url, LOG_LEVEL="WARNING")
    measured: list[tuple[str, int, float, float]] = []   # (what, bytes, seconds, peak RSS MB)
    try:
        _curl(server, build_id, "", "-r", "0-99")   # warm: imports, connections
        time.sleep(0.5)
        idle = server.rss_mb()
        floor_bytes, floor_s = _copy_floor(url, build_id)
        print(f"  floor: COPY of the messages {floor_bytes / 1e6:,.1f} MB in {floor_s:.2f} s", flush=True)
        runs: list[tuple[str, Any]] = [
            ("GET logs.txt (as written)", lambda: _curl(server, build_id, "")),
            ("GET logs.txt?ansi=strip&timestamps=true&levels=true",
             lambda: _curl(server, build_id, "?ansi=strip&timestamps=true&levels=true")),
            ("GET logs.txt, gzip (curl --compressed; bytes on the wire)",
             lambda: _curl(server, build_id, "", "--compressed")),
            ("GET logs.txt Range: bytes=<middle>- (from the marks)",
             lambda: _curl(server, build_id, "", "-r", f"{floor_bytes // 2}-")),
            ("ReadBuildLogText (gRPC stub)", lambda: _rpc(server, build_id)),
        ]
        for name, run in runs:
            with PeakRss(server) as rss:
                size, seconds = run()
            measured.append((name, size, seconds, rss.peak))
            print(f"  {name:<62} {size / 1e6:8.1f} MB sent {seconds:6.2f} s {size / seconds / 1e6:7.1f} MB/s "
                  f"peak RSS {rss.peak:6.1f} MB (idle {idle:.1f})", flush=True)
    finally:
        server.stop()
    for name, size, _, _ in measured:
        if ("as written" in name or "ReadBuildLogText" in name) and size != floor_bytes:
            figures.errors.append(f"download: {name} gave {size:,} bytes, the messages and newlines are {floor_bytes:,}")
    figures.values.update({"download.lines": lines, "download.idle_rss_mb": idle, "download.runs": measured,
                           "download.floor": (floor_bytes, floor_s)})
    floor_rate = floor_bytes / floor_s
    for name, size, seconds, peak in measured:
        # gzip: the rate of the text delivered (curl counts the compressed bytes).
        text = floor_bytes if "gzip" in name else size
        rate = text / seconds
        figures.rows.append((
            f"download of {lines:,} lines: {name}",
            f"{rate / 1e6:,.1f} MB/s of text ({size / 1e6:,.1f} MB sent in {seconds:.2f} s); "
            f"server RSS peak {peak:,.0f} MB, idle {idle:,.0f} MB",
            f"floor: COPY of the messages out of PostgreSQL, {floor_rate / 1e6:,.1f} MB/s",
            f"{rate / floor_rate:.2f} of the floor",
        ))
