"""python -m bench.http_followers: followers of one build over one transport,
for bench.connect. Each stream runs in a thread of this process (the same
client for every transport: the generated gRPC stub, or tests.http_support
over HTTP/1.1) and counts the lines it gets, checking they come once and in
order. Prints `ready` once every stream has caught up, then `result <json>`
when every stream has ended (the build finished).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from typing import Any

from buildplatform.v1 import build_log_pb2 as L

from tests.http_support import HttpClient
from tests.support import open_channel, stubs


def follow(args: argparse.Namespace, token: str, caught_up: threading.Barrier, out: dict[str, Any]) -> None:
    request = L.StreamBuildLogsRequest(build_id=args.build, follow=True)
    if args.kind == "grpc":
        channel = open_channel(args.grpc_address, token=token)   # a connection per stream, as over HTTP/1.1
        responses: Any = stubs(channel).logs.StreamBuildLogs(request, timeout=600)
    else:
        protocol, codec = args.kind.rsplit("-", 1)
        stream = HttpClient(args.http_port, token).open_stream(
            "buildplatform.v1.BuildLogService/StreamBuildLogs", request, L.StreamBuildLogsResponse,
            protocol=protocol, codec=codec, timeout=600)
        responses = stream.messages()
    expected, lines, problems, last = 1, 0, 0, 0
    waited = False
    for response in responses:
        for log in response.logs:
            problems += log.sequence != expected
            expected = log.sequence + 1
            lines += 1
        if response.logs:
            last = time.time_ns()
        if response.caught_up and not waited:
            waited = True
            caught_up.wait(120)
    out.update(lines=lines, problems=problems, last_ns=last)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", required=True, choices=["grpc", "connect-proto", "connect-json", "grpc-web-proto"])
    parser.add_argument("--grpc-address", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--build", required=True)
    parser.add_argument("--streams", type=int, default=4)
    args = parser.parse_args()
    token = os.environ["BUILDPLATFORM_TOKEN"]
    caught_up = threading.Barrier(args.streams + 1)
    results: list[dict[str, Any]] = [{} for _ in range(args.streams)]
    opened = time.time_ns()
    threads = [threading.Thread(target=follow, args=(args, token, caught_up, out)) for out in results]
    for thread in threads:
        thread.start()
    caught_up.wait(120)
    print(f"ready {(time.time_ns() - opened) / 1e9:.3f}", flush=True)
    for thread in threads:
        thread.join()
    print("result " + json.dumps({"opened_ns": opened, "streams": results}), flush=True)


if __name__ == "__main__":
    main()
