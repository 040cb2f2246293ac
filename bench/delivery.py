"""Issue 7, section 7: live delivery and follower memory against gRPC's own floor.

- `delivery`: append-to-follower latency, 100 followers on 2 replicas at
  5,000 lines/s (batches of 50), for the service and for the bare fan-out
  (bench.fanout) with the same appender pacing and the same followers
  process. Target: the service's p99 within 2x of the floor's.
  The appender pipelines: a batch goes out on schedule whether or not the
  one before was answered, each with its `first_sequence`, all on one
  connection to replica A (the followers are split over A and B, so half
  of them are served through NOTIFY from another process). The server takes
  one build's appends in arrival order; should a batch still overtake its
  predecessor it is refused (SEQUENCE_MISMATCH) and sent again once the
  predecessor is answered, which the offsets make safe.
- `idle`: RSS per idle follower (1,000 streams, one connection each) of the
  service and of the bare fan-out. Target: within 1.5x.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from typing import Any

import grpc
import psycopg
from buildplatform.v1 import build_log_pb2, build_log_pb2_grpc

from bench import procs
from bench.h2 import percentile
from bench.streams import Figures, Followers, cancel, check_delivery, entries, new_builds
from tests.support import admin_token, open_aio_channel

WINDOW = 8  # appends in flight at most; a slower server makes batches late instead of piling up


def fanout(name: str, token: str) -> procs.Proc:
    return procs.Proc(name, ["-m", "bench.fanout"], {}, token).wait_listening()


async def paced(
    servers: list[procs.Proc], build_id: str, *, rate: float, size: int, seconds: float, broadcast: bool
) -> dict[str, Any]:
    """Batches of `size` lines at `rate` per second, pipelined. broadcast:
    every batch to every server (the bare floor: no database links them);
    otherwise to the first server, with first_sequence."""
    options = [("grpc.max_send_message_length", 64 << 20)]
    channels = [open_aio_channel(s.address, token=s.token, options=options) for s in servers]
    stubs = [build_log_pb2_grpc.BuildLogServiceStub(c) for c in channels]
    total = int(rate * seconds)
    rpc_ms: list[float] = []
    retried = 0
    done: list[asyncio.Future[None]] = [asyncio.get_running_loop().create_future() for _ in range(total)]

    async def one(batch: int) -> None:
        nonlocal retried
        first = batch * size + 1
        request = build_log_pb2.AppendBuildLogsRequest(build_id=build_id, entries=entries(first, size), first_sequence=first)
        sent = time.perf_counter()
        try:
            if broadcast:
                await asyncio.gather(*(stub.AppendBuildLogs(request, timeout=30) for stub in stubs))
            else:
                stub = stubs[0]
                try:
                    await stub.AppendBuildLogs(request, timeout=30)
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.FAILED_PRECONDITION or not batch:
                        raise
                    retried += 1  # it overtook batch-1: send it again once that one is in
                    await done[batch - 1]
                    await stub.AppendBuildLogs(request, timeout=30)
            rpc_ms.append((time.perf_counter() - sent) * 1000)
        finally:
            done[batch].set_result(None)

    started = time.perf_counter()
    tasks = []
    late = 0
    for batch in range(total):
        if batch >= WINDOW:
            await done[batch - WINDOW]  # at most WINDOW appends in flight, as a careful writer keeps
        pause = started + batch / rate - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        elif pause < -0.05:
            late += 1
        tasks.append(asyncio.create_task(one(batch)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    for channel in channels:
        await channel.close()
    return {"lines": total * size, "elapsed": elapsed, "late": late, "retried": retried,
            "rpc_p50": percentile(rpc_ms, 0.5), "rpc_p99": percentile(rpc_ms, 0.99)}


def _latencies(results: list[dict[str, Any]]) -> tuple[float, float, int]:
    merged: Counter[float] = Counter()
    for result in results:
        for value, count in result["latency_ms"]:
            merged[value] += count
    samples = sorted(merged.items())
    total = sum(merged.values())

    def pct(q: float) -> float:
        seen = 0
        for value, count in samples:
            seen += count
            if seen >= q * total:
                return value
        return float("nan")

    return pct(0.5), pct(0.99), total


def _measure(kind: str, servers: list[procs.Proc], build_id: str, figures: Figures, *,
             followers: int, rate: float, size: int, seconds: float) -> dict[str, Any]:
    groups: list[Followers] = []
    try:
        half = followers // len(servers)
        groups = [Followers(f"followers-{kind}-{i}", s, [build_id], half, size) for i, s in enumerate(servers)]
        for group in groups:
            group.wait_ready()
        sent = asyncio.run(paced(servers, build_id, rate=rate, size=size, seconds=seconds,
                                  broadcast=kind == "floor"))
        for group in groups:
            if not group.wait_min(sent["lines"], timeout=30):
                figures.errors.append(f"delivery ({kind}): {group.proc.name} did not receive all {sent['lines']} lines")
        if kind == "service":
            cancel(servers[0], build_id)
            results = [g.finish() for g in groups]
        else:
            results = [g.finish(timeout=0) for g in groups]
    finally:
        for group in groups:
            if group.proc.proc.poll() is None:
                group.proc.stop()
    for result in results:
        check_delivery(figures, f"delivery ({kind}, {result['streams']} followers)", result, sent["lines"])
    p50, p99, samples = _latencies(results)
    return {**sent, "p50": p50, "p99": p99, "samples": samples, "rate": sent["lines"] / sent["elapsed"],
            "lost": sum(r["gaps"] for r in results), "duplicates": sum(r["duplicates"] for r in results)}


def delivery(url: str, figures: Figures, *, followers: int = 100, rates: tuple[float, ...] = (100, 50),
             size: int = 50, seconds: float = 15) -> None:
    """At 5,000 lines/s (the target's rate) and at half of it."""
    for rate in rates:
        shape = {"followers": followers, "rate": rate, "size": size, "seconds": seconds}
        floor_servers = [fanout("fanout-a", admin_token(url)), fanout("fanout-b", admin_token(url))]
        try:
            floor = _measure("floor", floor_servers, "c" + os.urandom(12).hex(), figures, **shape)
        finally:
            for server in floor_servers:
                server.stop()
        replicas = [procs.server("server-delivery-a", url), procs.server("server-delivery-b", url)]
        try:
            (build_id,) = new_builds(url, 1)
            # The benches before this one leave PostgreSQL with hundreds of MB
            # of dirty buffers; a checkpoint flushing them while commits wait
            # for the WAL stalled appends for ~350 ms (seen in its log). Flush
            # now, so the next timed checkpoint falls after this window.
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("CHECKPOINT")
            service = _measure("service", replicas, build_id, figures, **shape)
        finally:
            for replica in replicas:
                replica.stop()
        ratio = service["p99"] / floor["p99"] if floor["p99"] else float("nan")
        lines = int(rate * size)
        figures.values[f"delivery.{lines}"] = {"floor": floor, "service": service, "ratio": ratio, "followers": followers}
        print(f"  {lines} lines/s offered ({rate:.0f} batches of {size}), {followers} followers on 2 processes:", flush=True)
        for name, got in (("bare fan-out (floor)", floor), ("service", service)):
            print(f"    {name:21} {got['rate']:6.0f} lines/s sent ({got['late']} batches late): p50 {got['p50']:7.1f} ms  "
                  f"p99 {got['p99']:7.1f} ms; append p50 {got['rpc_p50']:.1f} ms p99 {got['rpc_p99']:.1f} ms; "
                  f"{got['retried']} re-sent; lost {got['lost']}, duplicated {got['duplicates']}", flush=True)
        print(f"    p99 ratio service/floor {ratio:.2f} (target <= 2.0)", flush=True)
        figures.rows.append((
            f"Append-to-follower, {followers} followers on 2 processes, {lines:,} lines/s offered",
            f"service: {service['rate']:,.0f} lines/s sent ({service['late']} batches late), p50 {service['p50']:.1f} ms, "
            f"p99 {service['p99']:.1f} ms; lost {service['lost']}, duplicated {service['duplicates']}",
            f"bare grpc.aio fan-out: {floor['rate']:,.0f} lines/s sent ({floor['late']} late), p50 {floor['p50']:.1f} ms, "
            f"p99 {floor['p99']:.1f} ms",
            f"p99 ratio {ratio:.2f} (target <= 2.0: {'**met**' if ratio <= 2.0 else '**NOT met**'})",
        ))


def _idle_rss(server: procs.Proc, builds: list[str], figures: Figures, kind: str, followers: int, hold: float) -> dict[str, float]:
    time.sleep(1)
    idle = server.rss_mb()
    group = Followers(f"followers-idle-{kind}", server, builds, followers)
    try:
        group.wait_ready(timeout=180)
        peak = server.rss_mb()
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline:
            peak = max(peak, server.rss_mb())
            time.sleep(0.5)
        result = group.finish(timeout=0)
    finally:
        if group.proc.proc.poll() is None:
            group.proc.stop()
    if result["ended"] != {"stopped": followers}:
        figures.errors.append(f"idle ({kind}): streams ended {result['ended']} before the bench stopped them")
    return {"idle": idle, "peak": peak, "per_stream_kb": (peak - idle) * 1000 / followers}


def idle(url: str, figures: Figures, *, followers: int = 1000, hold: float = 16.0) -> None:
    floor_server = fanout("fanout-idle", admin_token(url))
    try:
        floor = _idle_rss(floor_server, ["c" + "0" * 24], figures, "floor", followers, hold=2.0)
    finally:
        floor_server.stop()
    server = procs.server("server-idle", url)
    try:
        service = _idle_rss(server, new_builds(url, followers), figures, "service", followers, hold)
    finally:
        with contextlib.suppress(Exception):
            server.stop()
    ratio = service["per_stream_kb"] / floor["per_stream_kb"]
    figures.values.update({"idle.floor": floor, "idle.service": service, "idle.ratio": ratio, "idle.followers": followers})
    print(f"  bare grpc.aio: {floor['idle']:.0f} MB idle, +{floor['per_stream_kb']:.1f} kB per idle stream "
          f"({followers} streams, 1 connection each)", flush=True)
    print(f"  service:       {service['idle']:.0f} MB idle, +{service['per_stream_kb']:.1f} kB per idle follower "
          f"({followers} builds followed)", flush=True)
    print(f"  ratio {ratio:.2f} (target <= 1.5)", flush=True)
    figures.rows.append((
        f"Memory per idle follower, {followers:,} streams, 1 connection each",
        f"service: +{service['per_stream_kb']:.1f} kB per follower ({service['idle']:.0f} MB idle, {service['peak']:.0f} MB peak)",
        f"bare grpc.aio stream: +{floor['per_stream_kb']:.1f} kB ({floor['idle']:.0f} MB idle, {floor['peak']:.0f} MB peak)",
        f"ratio {ratio:.2f} (target <= 1.5: {'**met**' if ratio <= 1.5 else '**NOT met**'})",
    ))
