"""Does grpc.aio stop resuming a server-streaming handler whose client does
not read? The floor for the memory of stalled followers.

    python -m bench.stall serve SIZE     a bare grpc.aio server whose handler
                                         yields SIZE-byte messages forever;
                                         prints its port, then the total
                                         number of yields every 0.5 s
    python -m bench.stall clients ADDRESS COUNT
                                         COUNT streams on their own
                                         connections that never read

bench.feeds.rings runs both and reports the yields per stream (bounded when
flow control holds the handler) and the server's RSS.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any


async def serve(size: int) -> None:
    import grpc

    yields = 0

    async def handler(request: bytes, context: Any) -> Any:
        nonlocal yields
        payload = b"x" * size
        while True:
            yields += 1
            yield payload

    server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 << 20)])
    method = grpc.unary_stream_rpc_method_handler(handler, request_deserializer=bytes, response_serializer=bytes)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Stall", {"Follow": method}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    while True:
        await asyncio.sleep(0.5)
        print(yields, flush=True)


async def clients(address: str, count: int) -> None:
    from tests.support import open_aio_channel

    calls = []
    for _ in range(count):  # no token: the stall server is bench.stall's own, not the service
        channel = open_aio_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        call = channel.unary_stream("/bench.Stall/Follow", request_serializer=bytes, response_deserializer=bytes)(b"")
        await call.wait_for_connection()
        calls.append(call)
    print("ready", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve(int(sys.argv[2])))
    else:
        asyncio.run(clients(sys.argv[2], int(sys.argv[3])))
