"""The HTTP port: uvicorn (HTTP/1.1, the httptools parser) serving
server.http.app in the gRPC server's process and event loop.

uvicorn's `Server.serve()` installs signal handlers of its own (and re-raises
the signal when it ends); this process's handlers are __main__'s, so only
uvicorn's `startup()` and `shutdown()` are used, on a socket bound by the
caller (server.app, which reports a bad address in one line).

Shutdown: `shutdown()` stops accepting, closes idle keep-alive connections,
lets busy ones finish their response and then close, and waits for them up
to `grace` seconds before cancelling what is left. The calls themselves are
drained like gRPC's (server.transport.calls.Calls.drain): a follow ends at
once with UNAVAILABLE naming its resume cursor, other calls get the grace
period and are then answered UNAVAILABLE.

TLS (TLS_CERT_FILE/TLS_KEY_FILE, and TLS_CLIENT_CA_FILE requiring client
certificates) comes from server.tls: new connections get certificates
replaced on disk, as on the gRPC port.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

import uvicorn
from uvicorn.lifespan.off import LifespanOff

from server.http.app import HttpApp


class HttpServer:
    def __init__(
        self, app: HttpApp, sock: socket.socket, *, context: ssl.SSLContext | None, grace: float
    ) -> None:
        self.socket = sock
        self.port: int = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            http="httptools",
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,          # server.http.calls writes the access log
            proxy_headers=False,       # the peer is the peer: X-Forwarded-For is not trusted
            server_header=False,
            date_header=False,
            timeout_graceful_shutdown=max(1, round(grace)),
            ssl_context_factory=None if context is None else _given(context),
        )
        # uvicorn logs its own start and stop at INFO; this process logs its own.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        config.load()
        self.server = uvicorn.Server(config)
        self.server.lifespan = LifespanOff(config)

    async def start(self) -> None:
        await self.server.startup(sockets=[self.socket])

    async def stop(self) -> None:
        await self.server.shutdown(sockets=[self.socket])


def _given(context: ssl.SSLContext) -> Any:
    def factory(config: uvicorn.Config, default: Any) -> ssl.SSLContext:
        return context

    return factory
