"""Followers: `python -m bench.followers --address A --builds ID[,ID...] --count N`.

Opens N StreamBuildLogs(follow=true) streams (stream i follows build
i % len(builds)), each on its own connection as N separate clients would
(or several per connection with --streams-per-connection), sending the
token in BUILDPLATFORM_TOKEN if set.
Prints `ready` once every stream has its first reply (the backlog's end),
then `min <seq>` now and then (the lowest sequence every stream has
reached), and at the end one `result <json>` line: per-stream delivery
checks and the append-to-arrival latency of every line.

The appender (bench.streams) writes lines `<send time ns> <seq> ...` in
sequential batches; a line's latency is its arrival time here minus the
send time of its batch, read from the batch's first line. Every line's
sequence is checked: exactly once, in order, no gaps; the first line of
each batch also carries its own sequence in its text, which is checked
against the sequence the server gave it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from typing import Any

import grpc
from buildplatform.v1 import build_log_pb2, build_log_pb2_grpc

from tests.support import open_aio_channel


class Stream:
    def __init__(self) -> None:
        self.last = 0            # highest sequence received
        self.lines = 0
        self.gaps = 0            # lines skipped
        self.duplicates = 0      # lines received again or out of order
        self.mismatches = 0      # text that does not name its own sequence
        self.ready = False
        self.ended = ""
        self.batch_sent = 0.0


def connect(address: str) -> grpc.aio.Channel:
    # A subchannel pool of its own: its own TCP connection, as a separate client has.
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    return open_aio_channel(address, token=os.environ.get("BUILDPLATFORM_TOKEN"), options=options)


async def follow(channel: grpc.aio.Channel, build_id: str, stream: Stream, batch: int, latencies: Counter[float],
                 ready: asyncio.Event, total_ready: list[int], count: int) -> None:
    stub = build_log_pb2_grpc.BuildLogServiceStub(channel)
    call = stub.StreamBuildLogs(build_log_pb2.StreamBuildLogsRequest(build_id=build_id, follow=True))
    try:
        async for reply in call:
            now = time.time()
            if not stream.ready:
                stream.ready = True
                total_ready[0] += 1
                if total_ready[0] == count:
                    ready.set()
            logs = reply.logs
            if not logs:
                continue
            seqs = [log.sequence for log in logs]
            first = stream.last + 1
            if seqs[0] == first and seqs[-1] == first + len(seqs) - 1 and seqs == list(range(first, first + len(seqs))):
                # The usual case, checked in C: exactly the next lines, in order.
                group_start = 0
                for index in range((-(first - 1)) % batch, len(seqs), batch):
                    if index > group_start:
                        latencies[round((now - stream.batch_sent) * 1000, 2)] += index - group_start
                    group_start = index
                    sent, named, _ = logs[index].message.split(" ", 2)
                    stream.batch_sent = int(sent) / 1e9
                    if int(named) != seqs[index]:
                        stream.mismatches += 1
                latencies[round((now - stream.batch_sent) * 1000, 2)] += len(seqs) - group_start
                stream.last = seqs[-1]
                stream.lines += len(seqs)
                continue
            group_start = 0
            for index, seq in enumerate(seqs):
                if seq <= stream.last:
                    stream.duplicates += 1
                    continue
                if seq != stream.last + 1:
                    stream.gaps += seq - stream.last - 1
                stream.last = seq
                stream.lines += 1
                if (seq - 1) % batch == 0:
                    # First line of a batch: its send time and own sequence.
                    if index > group_start:
                        latencies[round((now - stream.batch_sent) * 1000, 2)] += index - group_start
                    group_start = index
                    sent, named, _ = logs[index].message.split(" ", 2)
                    stream.batch_sent = int(sent) / 1e9
                    if int(named) != seq:
                        stream.mismatches += 1
            if len(seqs) > group_start and stream.batch_sent:
                latencies[round((now - stream.batch_sent) * 1000, 2)] += len(seqs) - group_start
        stream.ended = "OK"
    except grpc.aio.AioRpcError as error:
        stream.ended = error.code().name
    except asyncio.CancelledError:
        stream.ended = "stopped"
        call.cancel()


async def main_async(args: argparse.Namespace) -> None:
    builds = args.builds.split(",")
    streams = [Stream() for _ in range(args.count)]
    latencies: Counter[float] = Counter()
    ready = asyncio.Event()
    total_ready = [0]
    per = max(1, args.streams_per_connection)
    channels = [connect(args.address) for _ in range((args.count + per - 1) // per)]
    tasks = [
        asyncio.create_task(
            follow(channels[i // per], builds[i % len(builds)], s, args.batch, latencies, ready, total_ready, args.count)
        )
        for i, s in enumerate(streams)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()

    async def report() -> None:
        await ready.wait()
        print(f"ready {time.monotonic() - started:.2f}", flush=True)
        while True:
            await asyncio.sleep(0.1)
            print(f"min {min(s.last for s in streams)}", flush=True)

    reporter = asyncio.create_task(report())
    everything = asyncio.gather(*tasks)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([everything, stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    reporter.cancel()
    for channel in channels:
        await channel.close()
    ended = Counter(s.ended or "not started" for s in streams)
    result: dict[str, Any] = {
        "streams": len(streams),
        "lines": [s.lines for s in streams],
        "last": [s.last for s in streams],
        "gaps": sum(s.gaps for s in streams),
        "duplicates": sum(s.duplicates for s in streams),
        "mismatches": sum(s.mismatches for s in streams),
        "ended": dict(ended),
        "latency_ms": sorted(latencies.items()),
    }
    print("result " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.followers")
    parser.add_argument("--address", required=True)
    parser.add_argument("--builds", required=True, help="comma-separated build ids")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, default=50, help="lines per appended batch")
    parser.add_argument("--streams-per-connection", type=int, default=1,
                        help="streams sharing one connection (1: every follower is its own client)")
    args = parser.parse_args()
    asyncio.run(main_async(args))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
