"""GET /builds/{build_id}/logs.txt: a build's log as plain text, streamed.

The bytes are ReadBuildLogText's (server.core.log_text renders both), the
caller and its rights are those of that RPC: the `authorization: Bearer`
header through the same Authenticator, the RPC's access rule
(`endpoint.admit`), then the build's owner check. The call goes through the
same steps as a Connect call (server.http.calls: request id, admission as a
stream, access log line, metrics and span under the RPC's name
/buildplatform.v1.BuildLogService/ReadBuildLogText).

  ?ansi=strip|keep         ANSI escape sequences removed or kept (default keep)
  ?timestamps=true         each entry starts with its create_time (RFC 3339 UTC, microseconds)
  ?levels=true             each entry starts with its level
  ?download=1              Content-Disposition: attachment; filename="<build_id>.log"

Range (RFC 9110): one range, `bytes=a-b`, `bytes=a-` or `bytes=-n`: 206 with
`Content-Range: bytes a-b/<length>` (`/*` while the build runs: the text
grows), 416 with `Content-Range: bytes */<length>` when the range starts at
or past the end; several ranges, or a header that does not parse, are
ignored (200, the whole text), as is a Range whose If-Range does not match
the ETag (a finished build's text has one; a running build's has none). A
range needs the text's length before the headers: it is counted (rendered
from the last mark, server.core.log_text) first.

gzip: with `Accept-Encoding: gzip`, a 200 is compressed as it streams
(`Content-Encoding: gzip`; every answer says `Vary: Accept-Encoding`). A
206 is never compressed: its offsets are offsets of the text.

Streaming: one chunk (at most 256 KiB) at a time; uvicorn's send waits while
the client's socket is full, so a slow client holds the render, never a
buffer. A client that disconnects stops the render. Errors before the first
byte are JSON, as every error of this port (`{"code": "not_found",
"message": ..., "details": [...]}` and the same HTTP status as Connect); one
after it (the database went away mid-stream) cuts the connection without
the chunked body's end, so the client sees an incomplete transfer, never a
short text that looks whole.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from connectrpc._protocol import ConnectWireError
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from server.core.calls import Endpoint
from server.core.deps import Deps
from server.core.log_text import LogText, TextOptions, open_text
from server.core.wire import validate_id
from server.domain.errors import FieldViolation, InvalidArgument, Unavailable
from server.http.calls import CallInterceptor, HttpCall
from server.transport.calls import SHUTTING_DOWN

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PATH = re.compile(r"/builds/([^/]{1,64})/logs\.txt")
METHOD = "/buildplatform.v1.BuildLogService/ReadBuildLogText"
RANGE = re.compile(r"bytes=(\d*)-(\d*)")
GZIP_LEVEL = 6

_TRUE, _FALSE = frozenset(("true", "1", "yes")), frozenset(("false", "0", "no", ""))


class Cut(Exception):
    """The text could not be finished after its first bytes went out."""


def _flag(check: list[tuple[str, str]], query: dict[str, list[str]], name: str) -> bool:
    value = query.get(name, ["false"])[-1].lower()
    if value in _TRUE:
        return True
    if value not in _FALSE:
        check.append((name, f"must be true or false, got {value[:20]!r}"))
    return False


def options_of(query_string: bytes) -> tuple[TextOptions, bool]:
    """The text's options and whether it is a download, from the query
    string; InvalidArgument naming the parameter (unknown parameters are ignored)."""
    query = urllib.parse.parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
    bad: list[tuple[str, str]] = []
    ansi = query.get("ansi", ["keep"])[-1].lower()
    if ansi not in ("keep", "strip"):
        bad.append(("ansi", f"must be keep or strip, got {ansi[:20]!r}"))
    options = TextOptions(ansi == "strip", _flag(bad, query, "timestamps"), _flag(bad, query, "levels"))
    download = _flag(bad, query, "download")
    if bad:
        raise InvalidArgument([FieldViolation(field, why) for field, why in bad])
    return options, download


def parse_range(value: str) -> tuple[int | None, int | None] | None:
    """(first, last) of a single byte range: (a, b), (a, None) or (None, n)
    for a suffix of n bytes; None when the header is not one valid range."""
    found = RANGE.fullmatch(value.strip().replace(" ", ""))
    if found is None:
        return None
    first, last = found.group(1), found.group(2)
    if not first and not last:
        return None
    if not first:
        return None, int(last)
    if last and int(last) < int(first):
        return None
    return int(first), int(last) if last else None


def resolve(wanted: tuple[int | None, int | None], length: int) -> tuple[int, int] | None:
    """The (first, last) bytes a range selects of a text of `length`; None
    when it is unsatisfiable."""
    first, last = wanted
    if first is None:
        assert last is not None
        if last == 0 or length == 0:
            return None
        return max(0, length - last), length - 1
    if first >= length:
        return None
    return first, length - 1 if last is None else min(last, length - 1)


def accepts_gzip(header: str) -> bool:
    """Whether Accept-Encoding names gzip with a weight above 0."""
    for item in header.split(","):
        coding, *params = item.split(";")
        if coding.strip().lower() not in ("gzip", "x-gzip"):
            continue
        weight = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        return weight > 0
    return False


def etag(build_id: str, text: LogText, gzipped: bool) -> str | None:
    """A strong validator of a finished build's text (it never changes)."""
    if not text.finished:
        return None
    o = text.options
    return f'"{build_id}-{text.upto}-{int(o.strip_ansi)}{int(o.timestamps)}{int(o.levels)}{"-gz" if gzipped else ""}"'


class LogDownload:
    """The handler of GET/HEAD /builds/{build_id}/logs.txt."""

    def __init__(self, deps: Deps, interceptor: CallInterceptor, endpoint: Endpoint) -> None:
        self.deps = deps
        self.interceptor = interceptor
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send, build_id: str) -> None:
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        client = scope.get("client")
        call = self.interceptor.open(METHOD, True, headers, f"{client[0]}:{client[1]}" if client else None)
        started = False

        async def start(status: int, extra: list[tuple[bytes, bytes]]) -> None:
            nonlocal started
            started = True
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"x-request-id", call.request_id.encode()), (b"cache-control", b"no-store"),
                (b"vary", b"accept-encoding"), *extra,
            ]})

        try:
            await self.interceptor.prove(call, headers, None)
        except ConnectError as refused:
            await _error(send, call, refused)
            return
        task = asyncio.current_task()
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            if task is not None:
                task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await self._serve(scope, send, call, headers, build_id, start)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if gone:
                self.interceptor.end(call, ConnectError(Code.CANCELED, "the client went away"))
                return
            # The end of the shutdown grace period (server.transport.calls.Calls.drain).
            await self._failed(send, call, Unavailable(SHUTTING_DOWN), build_id, started)
        except Exception as error:
            await self._failed(send, call, error, build_id, started)
        else:
            self.interceptor.end(call, None)
        finally:
            watcher.cancel()

    async def _failed(self, send: Send, call: HttpCall, error: Exception, build_id: str, started: bool) -> None:
        """End the call with `error`: its JSON error, or a cut connection once
        the text has begun."""
        failure = self.interceptor.end(call, error)
        assert failure is not None
        if started:
            raise Cut(f"the log of build {build_id} was cut after its first bytes: {failure.message}") from None
        await _error(send, call, failure)

    async def _serve(
        self, scope: Scope, send: Send, call: HttpCall, headers: dict[str, str], build_id: str,
        start: Callable[[int, list[tuple[bytes, bytes]]], Awaitable[None]],
    ) -> None:
        options, download = options_of(scope.get("query_string", b""))
        assert call.principal is not None
        self.endpoint.admit(call.principal)
        validate_id("build_id", build_id)
        text = await open_text(self.deps, call.principal, build_id, options)
        head = scope["method"] == "HEAD"
        extra = [
            (b"content-type", b"text/plain; charset=utf-8"), (b"x-content-type-options", b"nosniff"),
            (b"accept-ranges", b"bytes"),
        ]
        if download:
            extra.append((b"content-disposition", f'attachment; filename="{build_id}.log"'.encode()))
        wanted = parse_range(headers["range"]) if "range" in headers else None
        if wanted is not None and "if-range" in headers and headers["if-range"] != etag(build_id, text, False):
            wanted = None
        if wanted is not None:
            length = await text.length()
            selected = resolve(wanted, length)
            if selected is None:
                await start(416, [
                    (b"content-type", b"application/json"), (b"content-range", f"bytes */{length}".encode()),
                ])
                body = ConnectWireError(Code.OUT_OF_RANGE, (
                    f"the range {headers['range']!r} starts past the end of the text ({length} bytes "
                    "with these options): ask for bytes before it, or for the whole text without Range"
                ), ()).to_json_bytes()
                await send({"type": "http.response.body", "body": body})
                return
            first, last = selected
            total = str(length) if text.finished else "*"
            tag = etag(build_id, text, False)
            await start(206, [
                *extra, (b"content-range", f"bytes {first}-{last}/{total}".encode()),
                (b"content-length", str(last - first + 1).encode()), *([(b"etag", tag.encode())] if tag else []),
            ])
            if not head:
                await self._body(send, call, text, first, last - first + 1, None)
            await send({"type": "http.response.body", "body": b""})
            return
        gzipped = accepts_gzip(headers.get("accept-encoding", ""))
        tag = etag(build_id, text, gzipped)
        if tag:
            extra.append((b"etag", tag.encode()))
        if gzipped:
            extra.append((b"content-encoding", b"gzip"))
        else:
            known = text.known_length()
            if known is not None:
                extra.append((b"content-length", str(known).encode()))
        await start(200, extra)
        if not head:
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if gzipped else None
            await self._body(send, call, text, 0, 0, compressor)
        await send({"type": "http.response.body", "body": b""})

    async def _body(
        self, send: Send, call: HttpCall, text: LogText, offset: int, limit: int, compressor: Any
    ) -> None:
        async for _, data in text.chunks(offset, limit):
            out = data if compressor is None else compressor.compress(data)
            if out:
                call.sent += len(out)
                await send({"type": "http.response.body", "body": out, "more_body": True})
        if compressor is not None:
            out = compressor.flush()
            call.sent += len(out)
            await send({"type": "http.response.body", "body": out, "more_body": True})


async def _error(send: Send, call: HttpCall, failure: ConnectError) -> None:
    """The JSON error of this port (Connect's unary error body and HTTP status)."""
    wire = ConnectWireError.from_exception(failure)
    await send({"type": "http.response.start", "status": wire.to_http_status().code, "headers": [
        (b"content-type", b"application/json"), (b"cache-control", b"no-store"),
        (b"x-request-id", call.request_id.encode()),
    ]})
    await send({"type": "http.response.body", "body": wire.to_json_bytes()})
