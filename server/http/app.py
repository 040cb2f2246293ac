"""The ASGI application of the HTTP port: what is not an RPC, then the RPCs.

  OPTIONS (a CORS preflight)     answered here, without authentication
  GET /healthz                   200 "ok": the process is up
  GET /readyz                    200 "ready", or 503 "not ready: <why>": the database
                                 answers and the schema is ready (gRPC health's SERVING)
  GET /builds/{id}/logs.txt      the build's log as text (server.http.log_download), with
                                 the credentials and rules of ReadBuildLogText
  other GETs that are no RPC     server.web_assets.serve(path) when that module exists;
                                 else 404
  POST application/grpc          415: gRPC (HTTP/2) is served on GRPC_ADDRESS
  everything else                connectrpc: Connect (unary and server streams, JSON and
                                 binary), gRPC-Web, plain JSON POST (Connect unary
                                 without its optional headers)

What connectrpc refuses before a call begins (a path that is no RPC, a method
other than POST, a content type the method cannot take) it answers with a
status and no body; those answers get a Connect error body here
({"code": ..., "message": ...}, as every other refusal) saying what to send.

A response to an origin of HTTP_CORS_ORIGINS carries the CORS headers that
let a browser read it; any other origin gets none (and the browser refuses).
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from connectrpc.method import StreamType
from connectrpc.server import ConnectASGIApplication

from server.http.calls import CallInterceptor
from server.http.codecs import CODECS
from server.http.log_download import PATH as LOG_TEXT
from server.http.log_download import LogDownload
from server.transport.calls import Calls

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Static = Callable[[str], "tuple[int, dict[str, str], bytes] | None"]

# What Connect and gRPC-Web clients send, and what they must read, across origins.
ALLOW_HEADERS = ", ".join((
    "authorization", "content-type", "content-encoding", "connect-protocol-version", "connect-timeout-ms",
    "connect-content-encoding", "connect-accept-encoding", "grpc-timeout", "grpc-encoding",
    "grpc-accept-encoding", "x-grpc-web", "x-user-agent", "x-request-id", "range", "if-range",
)).encode()
EXPOSE_HEADERS = ", ".join((
    "grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-encoding", "grpc-accept-encoding",
    "connect-content-encoding", "connect-accept-encoding", "x-request-id",
    "content-range", "content-disposition", "content-length", "etag",
)).encode()
PREFLIGHT_MAX_AGE = b"7200"   # seconds; browsers cap it (Chromium at 2 hours)

MAX_REQUEST_BYTES = 64 * 1024 * 1024   # as grpc.max_receive_message_length: 5000 lines of 64 KiB


class _Procedures(ConnectASGIApplication[None]):
    """Every RPC, by its path."""

    @property
    def path(self) -> str:
        return "/"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _error_body(code: str, message: str) -> bytes:
    """A Connect error (docs/http.md#errors), the body of every refusal on this port."""
    return json.dumps({"code": code, "message": message}).encode()


async def _respond_error(send: Send, status: int, code: str, message: str,
                         headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = _error_body(code, message)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), *headers,
    ]})
    await send({"type": "http.response.body", "body": body})


STREAM_ACCEPT = b"application/connect+json, application/connect+proto, application/grpc-web"
UNARY_CONTENT = "content-type: application/json (or application/proto)"
STREAM_CONTENT = ("content-type: application/connect+json with the request in a Connect envelope "
                  "(a flag byte 0, its 4-byte big-endian length, then the JSON), as `buf curl` and "
                  "@buildplatform/api/web send it, or application/grpc-web")


def _what_to_send(status: int, method: str, path: str, content_type: str, streams: bool | None) -> tuple[str, str]:
    """(Connect code, message) for a refusal connectrpc answers without a body."""
    if streams is None:
        return "unimplemented", (f"no RPC at {path[:200]}: POST to /<package>.<Service>/<Method>, "
                                 "for example /buildplatform.v1.BuildService/GetBuild (docs/http.md)")
    rpc = path.lstrip("/")
    how = (f"it is a server stream: POST with {STREAM_CONTENT} (docs/http.md)" if streams
           else f"POST the request as JSON with {UNARY_CONTENT} (docs/http.md)")
    if status == 405:
        return "unimplemented", f"{method} is not served on {rpc}: {how}"
    sent = f"content-type {content_type[:100]!r}" if content_type else "no content-type"
    return "invalid_argument", f"{sent} is not accepted by {rpc}: {how}"


async def _respond(send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = (),
                   *, head: bool = False) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store"), *headers,
    ]})
    await send({"type": "http.response.body", "body": b"" if head else body})


def _web_assets() -> Static | None:
    """server.web_assets.serve when that module exists (the browser pages)."""
    try:
        module = importlib.import_module("server.web_assets")
    except ModuleNotFoundError as error:
        if error.name == "server.web_assets":
            return None
        raise
    serve: Static = module.serve
    return serve


class HttpApp:
    def __init__(
        self,
        endpoints: dict[str, Any],
        *,
        calls: Calls,
        interceptor: CallInterceptor,
        not_ready: Callable[[], str | None],
        cors_origins: Collection[str] = (),
        log_download: LogDownload | None = None,
    ) -> None:
        self.log_download = log_download
        self.procedures = frozenset(endpoints)
        self.streams = frozenset(path for path, found in endpoints.items()
                                 if found.method.stream_type != StreamType.UNARY)
        self.connect = _Procedures(
            service=None, endpoints=lambda _: endpoints, interceptors=[interceptor],
            read_max_bytes=MAX_REQUEST_BYTES, codecs=CODECS,
        )
        self.calls = calls
        self.not_ready = not_ready
        self.any_origin = "*" in cors_origins
        self.origins = frozenset(origin.encode() for origin in cors_origins)
        self._static: Static | None = None
        self._static_looked_up = False

    def _allowed(self, origin: bytes | None) -> bool:
        return origin is not None and (self.any_origin or origin in self.origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        origin = _header(scope, b"origin") if self.origins or self.any_origin else None
        if method == "OPTIONS":
            await self._preflight(send, origin)
            return
        if self._allowed(origin):
            send = _with_cors(send, origin)  # type: ignore[arg-type]
        if method in ("GET", "HEAD") and path not in self.procedures:
            download = LOG_TEXT.fullmatch(path) if self.log_download is not None else None
            if download is not None:
                assert self.log_download is not None
                await self.log_download(scope, receive, send, download.group(1))
                return
            await self._get(path, send, head=method == "HEAD")
            return
        content_type = _header(scope, b"content-type") or b""
        if content_type.startswith(b"application/grpc") and not content_type.startswith(b"application/grpc-web"):
            await _respond_error(send, 415, "invalid_argument", "gRPC is served on GRPC_ADDRESS (HTTP/2); this port "
                                 "speaks Connect, gRPC-Web and JSON (docs/http.md)")
            return
        try:
            await self.connect(scope, receive, self._explained(send, method, path, content_type))
        except asyncio.CancelledError:
            if not self.calls.draining:
                raise
            # Cut at the end of the shutdown grace period: the call was
            # answered UNAVAILABLE (server.http.calls); nothing for uvicorn to report.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]

    def _explained(self, send: Send, method: str, path: str, content_type: bytes) -> Send:
        """`send`, with a Connect error body for connectrpc's refusals without one."""
        body: bytes | None = None

        async def explaining(message: dict[str, Any]) -> None:
            nonlocal body
            if message["type"] == "http.response.start" and message["status"] in (404, 405, 415) and not any(
                name.lower() == b"content-type" for name, _ in message.get("headers", ())
            ):
                streams = path in self.streams if path in self.procedures else None
                code, said = _what_to_send(message["status"], method, path, content_type.decode("latin-1"), streams)
                body = _error_body(code, said)
                headers = list(message.get("headers", ()))
                if streams:   # connectrpc names the unary content types whatever the method
                    headers = [(name, STREAM_ACCEPT if name.lower() == b"accept-post" else value)
                               for name, value in headers]
                message = {**message, "headers": [
                    *headers, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                ]}
            elif message["type"] == "http.response.body" and body is not None:
                message = {**message, "body": body}
            await send(message)

        return explaining

    async def _preflight(self, send: Send, origin: bytes | None) -> None:
        headers: list[tuple[bytes, bytes]] = [
            (b"vary", b"origin, access-control-request-method, access-control-request-headers"),
        ]
        if self._allowed(origin):
            assert origin is not None
            headers += [
                (b"access-control-allow-origin", origin),
                (b"access-control-allow-methods", b"GET, POST"),
                (b"access-control-allow-headers", ALLOW_HEADERS),
                (b"access-control-max-age", PREFLIGHT_MAX_AGE),
            ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _get(self, path: str, send: Send, *, head: bool) -> None:
        if path == "/healthz":
            await _respond(send, 200, b"ok\n", head=head)
            return
        if path == "/readyz":
            why = self.not_ready()
            if why is None:
                await _respond(send, 200, b"ready\n", head=head)
            else:
                await _respond(send, 503, f"not ready: {why}\n".encode(), head=head)
            return
        if not self._static_looked_up:
            self._static, self._static_looked_up = _web_assets(), True
        found = self._static(path) if self._static is not None else None
        if found is None:
            await _respond(send, 404, b"not found\n", head=head)
            return
        status, headers, body = found
        await send({"type": "http.response.start", "status": status, "headers": [
            (name.lower().encode(), value.encode()) for name, value in headers.items()
        ]})
        await send({"type": "http.response.body", "body": b"" if head else body})


def _with_cors(send: Send, origin: bytes) -> Send:
    async def send_with_cors(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                *message.get("headers", ()),
                (b"access-control-allow-origin", origin),
                (b"access-control-expose-headers", EXPOSE_HEADERS),
                (b"vary", b"origin"),
            ]
        await send(message)

    return send_with_cors
