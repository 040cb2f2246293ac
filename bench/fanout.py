"""The floor for live delivery: a bare grpc.aio fan-out.

`python -m bench.fanout [--port P]` serves BuildLogService.AppendBuildLogs
and StreamBuildLogs(follow=true) with nothing but grpc.aio: an append
places its lines at their first_sequence, serializes each once into a
BuildLog, keeps them in memory and wakes every follower; a follower sends everything new since its
cursor in one pre-serialized message (the same wire layout the service
sends, built by the same functions). No database, no interceptor, no
validation, no access log. The bench's appender and followers
(bench.followers) talk to it exactly as to the service, so the service's
latency and memory per stream are reported against what grpc.aio itself
costs on the same machine in the same run.

Two such processes stand in for two replicas: the appender sends every
batch to both (there is no database to carry it from one to the other).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import grpc
from buildplatform.v1 import build_log_pb2

from server.core.feeds_wire import stream_response
from server.live.records import repeated_field_1


class Fanout:
    def __init__(self) -> None:
        self.wire: dict[str, list[bytes]] = {}      # build -> serialized lines, seq i at index i-1
        self.early: dict[str, dict[int, list[bytes]]] = {}  # batches that arrived before their predecessor
        self.waiting: dict[str, set[asyncio.Event]] = {}

    async def append(self, request: build_log_pb2.AppendBuildLogsRequest, context: object) -> build_log_pb2.AppendBuildLogsResponse:
        """Lines go at their `first_sequence` (the appender pipelines, so a
        batch may overtake the one before); followers see the gapless prefix."""
        lines = self.wire.setdefault(request.build_id, [])
        early = self.early.setdefault(request.build_id, {})
        first = request.first_sequence or len(lines) + 1
        early[first] = [
            repeated_field_1(build_log_pb2.BuildLog(
                build_id=request.build_id, sequence=first + offset, level=entry.level, message=entry.message,
            ).SerializeToString())
            for offset, entry in enumerate(request.entries)
        ]
        while len(lines) + 1 in early:
            lines.extend(early.pop(len(lines) + 1))
        for event in self.waiting.get(request.build_id, ()):
            event.set()
        return build_log_pb2.AppendBuildLogsResponse(first_sequence=first, last_sequence=first + len(request.entries) - 1)

    async def stream(self, request: build_log_pb2.StreamBuildLogsRequest, context: object):  # type: ignore[no-untyped-def]
        lines = self.wire.setdefault(request.build_id, [])
        cursor = len(lines)
        yield stream_response([], cursor, True)
        event = asyncio.Event()
        self.waiting.setdefault(request.build_id, set()).add(event)
        try:
            while True:
                await event.wait()
                event.clear()
                if len(lines) > cursor:
                    batch = lines[cursor:]
                    cursor = len(lines)
                    yield stream_response(batch, cursor, False)
        finally:
            self.waiting[request.build_id].discard(event)


async def serve(port: int) -> None:
    fanout = Fanout()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    handlers = {
        "AppendBuildLogs": grpc.unary_unary_rpc_method_handler(
            fanout.append,
            request_deserializer=build_log_pb2.AppendBuildLogsRequest.FromString,
            response_serializer=build_log_pb2.AppendBuildLogsResponse.SerializeToString,
        ),
        "StreamBuildLogs": grpc.unary_stream_rpc_method_handler(
            fanout.stream,
            request_deserializer=build_log_pb2.StreamBuildLogsRequest.FromString,
            response_serializer=bytes,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("buildplatform.v1.BuildLogService", handlers),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"listening on 127.0.0.1:{bound}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
