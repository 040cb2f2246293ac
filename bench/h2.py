"""h2load as a gRPC load generator, and the sample call that checks what it
cannot: h2load counts HTTP statuses, and a failed gRPC call is HTTP 200 with
a non-zero grpc-status trailer. Also as an HTTP/1.1 load generator
(`h2load --h1`) for the Connect port, where a failed call is a non-200 status
and h2load's count is the truth."""

from __future__ import annotations

import re
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.env import RUN_DIR
from tests.support import open_channel


@dataclass
class Load:
    connections: int = 16
    streams: int = 8
    duration: float = 10.0
    warmup: float = 2.0
    rps_per_connection: float = 0.0   # 0: as fast as the server answers (saturation)


@dataclass
class Result:
    name: str
    requests: int           # completed in the measured window
    rps: float
    p50_ms: float
    p99_ms: float
    failed: int             # h2load's failed + errored (HTTP level)
    bytes_per_response: float
    cpu: Any = None         # bench.cpu.Usage during the run

    def row(self) -> str:
        return f"{self.rps:8.0f} req/s  p50 {self.p50_ms:6.2f} ms  p99 {self.p99_ms:6.2f} ms"


def body_file(name: str, message: Any) -> Path:
    """The 5-byte gRPC prefix (no compression, big-endian length) and the request."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    data = message.SerializeToString()
    path = RUN_DIR / f"{name}.body"
    path.write_bytes(b"\x00" + len(data).to_bytes(4, "big") + data)
    return path


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[index]


def run(h2load: str, name: str, address: str, method: str, message: Any, load: Load, token: str | None) -> Result:
    """Drive `method` (/package.Service/Method) at `address` for load.duration
    seconds after load.warmup seconds of warm-up, each request with `token`;
    latencies come from h2load's per-request log, throughput from the
    requests that ended in the window."""
    body = body_file(name, message)
    return _measure(h2load, name, load, [
        f"-c{load.connections}", f"-m{load.streams}", "-d", str(body),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        *(["-H", f"authorization: Bearer {token}"] if token else []),
        f"http://{address}{method}",
    ])


def run_http1(h2load: str, name: str, address: str, path: str, body: bytes, content_type: str, load: Load,
              token: str | None) -> Result:
    """Drive a Connect unary call: POST `body` to `path` over HTTP/1.1
    (h2load --h1), load.connections connections with one request at a time
    each (no pipelining: browsers and HTTP clients do not pipeline)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    body_path = RUN_DIR / f"{name}.body"
    body_path.write_bytes(body)
    return _measure(h2load, name, load, [
        "--h1", f"-c{load.connections}", "-m1", "-d", str(body_path),
        "-H", f"content-type: {content_type}", "-H", "connect-protocol-version: 1",
        *(["-H", f"authorization: Bearer {token}"] if token else []),
        f"http://{address}{path}",
    ])


def _measure(h2load: str, name: str, load: Load, args: list[str]) -> Result:
    log = RUN_DIR / f"{name}.h2log"
    log.unlink(missing_ok=True)
    cmd = [
        h2load, "-t1", f"-D{load.duration:g}", f"--warm-up-time={load.warmup:g}", f"--log-file={log}",
        *([f"--rps={load.rps_per_connection:g}"] if load.rps_per_connection else []),
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=load.duration + load.warmup + 60)
    out = done.stdout
    (RUN_DIR / f"{name}.h2out").write_text(out + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"h2load failed ({done.returncode}):\n{out}\n{done.stderr}")
    match = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if not match:
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    _, _, _, ok, failed, errored = (int(g) for g in match.groups())
    data = re.search(r"traffic: .*?(\d+) \(\d+\) data", out)
    # The per-request log: start (us since epoch), HTTP status, duration (us).
    # h2load writes only the measured window's requests to it.
    durations = [
        int(parts[2]) / 1000
        for parts in (line.split("\t") for line in log.read_text().splitlines())
        if len(parts) >= 3 and parts[1] == "200"
    ]
    return Result(
        name=name,
        requests=len(durations),
        rps=len(durations) / load.duration,
        p50_ms=statistics.median(durations) if durations else float("nan"),
        p99_ms=percentile(durations, 0.99),
        failed=failed + errored,
        bytes_per_response=(int(data.group(1)) / ok) if data and ok else 0.0,
    )


def sample_call(address: str, method: str, message: Any, response_type: Any, token: str | None) -> tuple[grpc.StatusCode, Any]:
    """One call with the real client: its status (from the trailers) and reply."""
    with open_channel(address, token=token) as channel:
        call = channel.unary_unary(
            method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        try:
            reply, state = call.with_call(message, timeout=10)
            return state.code(), reply
        except grpc.RpcError as error:
            return error.code(), error.details()
