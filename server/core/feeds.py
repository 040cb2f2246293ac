"""BuildLogService and BuildEventService: one implementation, two kinds.

Both services' RPCs are here (`append_build_logs`, `stream_build_events`,
...), over one `FeedStreams` per kind.

A stream moves a cursor (the last sequence number considered) forward
through the build's feed. While the cursor is inside the process's ring
(server.store.notify.Feed) it reads from memory, otherwise from PostgreSQL
in pages; either way it sends everything available in one message, never
one message per row. Every message and List page carries at most
MAX_MESSAGE_BYTES of serialized items (and at least one item): the store
cuts its read on an upper bound of each row's size, and this module cuts
exactly on the real sizes, so a page of big lines holds fewer of them and
its cursor or page token names exactly the last one sent.

A stream whose database read fails ends with UNAVAILABLE naming the cursor
to resume from, like a stream ended by shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from buildplatform.v1 import build_event_pb2, build_log_pb2

from server.core import feeds_wire as wire
from server.core import guard
from server.core.deps import Deps
from server.core.feeds_wire import stream_response
from server.core.log_text import (
    read_build_log_text as read_build_log_text,  # BuildLogService.ReadBuildLogText
)
from server.core.wire import from_timestamp, validate_id
from server.domain.access import Principal
from server.domain.errors import InvalidArgument, Unauthenticated, Unavailable
from server.domain.limits import FEED_PAGE_SIZE, MAX_BATCH
from server.domain.limits import RESPONSE_BYTES as MAX_MESSAGE_BYTES
from server.domain.status import TERMINAL
from server.domain.validation import Checker
from server.store import feeds
from server.store.db import DatabaseUnavailable
from server.store.feeds import Kind
from server.store.notify import Entry
from server.telemetry import stream_caught_up

DB_PAGE = 1000  # rows per catch-up read from the database (and MAX_MESSAGE_BYTES)


@dataclass(frozen=True, slots=True)
class StreamRequest:
    build_id: str
    after: int
    follow: bool
    tail: int
    since: Any
    values: Sequence[str]
    principal: Principal


def _stream_request(
    principal: Principal, request: Any, tail: int, tail_field: str, values: Sequence[str]
) -> StreamRequest:
    build_id = validate_id("build_id", request.build_id)
    check = Checker()
    if request.after_sequence < 0:
        check.add("after_sequence", "must not be negative")
    if tail < 0:
        check.add(tail_field, "must not be negative")
    check.done()
    since = from_timestamp(request.since_time) if request.HasField("since_time") else None
    return StreamRequest(build_id, request.after_sequence, request.follow, tail, since, values, principal)


class FeedStreams:
    """The stream, list and append logic shared by logs and events."""

    def __init__(
        self,
        kind: Kind,
        to_entry: Callable[[dict[str, Any]], Entry],
        to_pb: Callable[[Any], Any],
    ) -> None:
        self.kind = kind
        self.to_entry = to_entry
        self.to_pb = to_pb

    async def list_page(
        self, d: Deps, principal: Principal, request: Any, values: Sequence[str]
    ) -> tuple[list[Any], str]:
        build_id = validate_id("build_id", request.build_id)
        check = Checker()
        limit = check.page_size("page_size", request.page_size, default=FEED_PAGE_SIZE, maximum=MAX_BATCH)
        if request.after_sequence < 0:
            check.add("after_sequence", "must not be negative")
        check.done()
        await guard.require(d, principal, "build", build_id)
        filters = [build_id, list(values)]
        position = d.tokens.decode(request.page_token, self.kind.table, filters)
        after = int(position[0]) if position else request.after_sequence
        read = await feeds.read_page(
            d.db, feeds.Read(self.kind, build_id, after, limit=limit, max_bytes=MAX_MESSAGE_BYTES, values=values)
        )
        items = [self.to_pb(row) for row in read.rows]
        # +4: the item's tag and length prefix in the page's repeated field.
        kept = feeds.fitting((item.ByteSize() + 4 for item in items), MAX_MESSAGE_BYTES)
        more = read.more or kept < len(items)
        items = items[:kept]
        token = d.tokens.encode(self.kind.table, filters, [items[-1].sequence]) if more else ""
        return items, token

    async def stream(self, d: Deps, req: StreamRequest) -> AsyncIterator[bytes]:
        """Serialized StreamBuild{Logs,Events}Response messages (see feeds_wire).

        Any failed database read ends the stream with UNAVAILABLE naming the
        cursor of the last message sent, from which the client resumes.
        (One generator, not a wrapper around another: every message of every
        follower passes through each layer.)"""
        resume = req.after  # the cursor of the last message sent
        expires = req.principal.expire_time
        try:
            await guard.require(d, req.principal, "build", req.build_id)
            kind = self.kind
            wanted = frozenset(req.values)
            measured = None if d.metrics is None else d.metrics.feed[kind.name]
            async with contextlib.AsyncExitStack() as stack:
                feed = event = None
                if req.follow:
                    # Follow before reading the position: nothing committed in
                    # between can be missed.
                    feed, event = await stack.enter_async_context(d.hub.follow(kind, req.build_id, self.to_entry))
                status, upto, cursor = await feeds.start(
                    d.db, kind, req.build_id, after=req.after, since=req.since, tail=req.tail, values=req.values
                )
                final = upto if status in TERMINAL else None
                caught_up = False
                loop = asyncio.get_running_loop()
                sent = loop.time()  # when the last message went out
                while True:
                    if event is not None:
                        event.clear()
                    start = cursor
                    if feed is not None and feed.covers(cursor):
                        entries = feed.after(cursor, MAX_MESSAGE_BYTES)
                        if entries:
                            cursor = entries[-1].seq
                    else:
                        # Behind the ring, or no ring: a bounded read up to a
                        # committed position (the backlog's end, or what the feed
                        # has seen), which lets the cursor pass rows a filter skips.
                        bound = max(upto, feed.head or 0) if feed is not None else upto
                        if measured is not None and feed is not None and feed.head is not None:
                            measured.database_reads.inc()   # a follower behind the ring
                        entries, cursor = await self._read(d, req, cursor, bound)
                    batch = [e.wire for e in entries if not wanted or e.value in wanted]
                    reached = not caught_up and cursor >= upto
                    if batch or reached:
                        resume = cursor
                        yield stream_response(batch, cursor, reached)
                        sent = loop.time()
                        if caught_up and batch and measured is not None:
                            # A live message: from its oldest line's commit to now.
                            measured.lag.observe(time.time() - entries[0].time)
                        if reached:
                            stream_caught_up()   # the stream's span ends with its catch-up
                        caught_up = caught_up or reached
                    if caught_up and not req.follow:
                        return
                    if cursor != start and (feed is None or feed.head is None or cursor < feed.head or not feed.covers(cursor)):
                        continue  # more may be ready now (a ring read that reached the ring's head has all there is)
                    if not req.follow or (caught_up and final is not None and cursor >= final):
                        return
                    if feed is not None and feed.final is not None:
                        final = feed.final
                        if cursor >= final:
                            return
                    if d.hub.shutting_down:
                        raise Unavailable(
                            f"the server is shutting down: resume on another replica with after_sequence={cursor}"
                        )
                    if expires is not None and time.time() >= expires:
                        raise _expired(resume)
                    assert feed is not None and event is not None
                    if feed.error is not None or not d.hub.connected.is_set():
                        # The feed could not read, or notifications may be lost
                        # (no LISTEN connection): ask the database now. If it does
                        # not answer, the stream ends with its cursor instead of
                        # waiting for a heartbeat; if it does, the feed reads on.
                        status, last = await feeds.position(d.db, kind, req.build_id)
                        feed.error = None
                        feed.announce(last)
                        if status in TERMINAL:
                            final = last
                            if cursor >= final:
                                return
                    if loop.time() - sent >= d.heartbeat_seconds:
                        # Silent for a heartbeat period (the hub's ticker wakes
                        # idle followers): a message keeps idle proxies from
                        # cutting the stream, and, since notifications are only
                        # hints, the database says whether one was missed.
                        resume = cursor
                        yield stream_response([], cursor, False)
                        sent = loop.time()
                        status, last = await feeds.position(d.db, kind, req.build_id)
                        if status in TERMINAL:
                            final = last
                        feed.announce(last)  # the feed reads up to `last` if it has not yet
                        continue
                    if expires is None:
                        # A bare wait: no timer per wait (the ticker provides the
                        # heartbeat), so an idle follower holds as little as possible.
                        await event.wait()
                    else:
                        # A credential that expires ends the stream when it does.
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(max(0.0, expires - time.time())):
                                await event.wait()
        except DatabaseUnavailable as error:
            # The database's own message stays in the server (it may name
            # hosts); the client learns what to do.
            raise Unavailable(f"the database is unavailable: resume with after_sequence={resume}") from error

    async def _read(self, d: Deps, req: StreamRequest, cursor: int, bound: int) -> tuple[list[Entry], int]:
        """The matching entries after `cursor` up to `bound`, cut at
        MAX_MESSAGE_BYTES, and the cursor after them: the last entry's when
        the read was cut, else `bound` (every matching row up to it was read)."""
        read = await feeds.read(d.db, feeds.Read(
            self.kind, req.build_id, cursor, limit=DB_PAGE, max_bytes=MAX_MESSAGE_BYTES,
            upto=bound, values=req.values,
        ))
        entries = [self.to_entry(row) for row in read.rows]
        kept = feeds.fitting((len(entry.wire) for entry in entries), MAX_MESSAGE_BYTES)
        if read.more or kept < len(entries):
            return entries[:kept], entries[kept - 1].seq
        return entries, max(cursor, bound)

    async def append(
        self, d: Deps, principal: Principal, build_id: str, entries: Sequence[Sequence[Any]], first_sequence: int
    ) -> feeds.Appended:
        validate_id("build_id", build_id)
        if first_sequence < 0:
            raise InvalidArgument.one("first_sequence", "must not be negative")
        await guard.require(d, principal, "build", build_id)
        done = await feeds.append(d.db, self.kind, build_id, entries, first_sequence=first_sequence, now=d.clock())
        if d.metrics is not None and not done.already_written:
            # The entries' own serialized size: each carries its wire bound last.
            size = sum(map(itemgetter(-1), entries)) - len(entries) * feeds.SERVER_FIELDS_BYTES
            d.metrics.feed[self.kind.name].append(len(entries), size)
        return done


def _expired(resume: int) -> Unauthenticated:
    """The end of a stream whose credential expired: resume with a fresh one."""
    return Unauthenticated(
        "EXPIRED", f"resume with after_sequence={resume}", metadata={"after_sequence": str(resume)}
    )


LOGS = FeedStreams(feeds.LOGS, wire.log_entry, wire.log_to_pb)
EVENTS = FeedStreams(feeds.EVENTS, wire.event_entry, wire.event_to_pb)


async def append_build_logs(
    d: Deps, principal: Principal, request: build_log_pb2.AppendBuildLogsRequest
) -> build_log_pb2.AppendBuildLogsResponse:
    done = await LOGS.append(d, principal, request.build_id, wire.log_entries(request), request.first_sequence)
    return build_log_pb2.AppendBuildLogsResponse(
        first_sequence=done.first, last_sequence=done.last, already_written=done.already_written
    )


async def list_build_logs(
    d: Deps, principal: Principal, request: build_log_pb2.ListBuildLogsRequest
) -> build_log_pb2.ListBuildLogsResponse:
    logs, token = await LOGS.list_page(d, principal, request, wire.levels(request.levels))
    return build_log_pb2.ListBuildLogsResponse(logs=logs, next_page_token=token)


def stream_build_logs(
    d: Deps, principal: Principal, request: build_log_pb2.StreamBuildLogsRequest
) -> AsyncIterator[bytes]:
    """Serialized StreamBuildLogsResponse messages. The stream itself, not a
    generator around it: every message of a follower passes through each
    layer, so there is one layer fewer."""
    req = _stream_request(principal, request, request.tail_lines, "tail_lines", wire.levels(request.levels))
    return LOGS.stream(d, req)


async def append_build_events(
    d: Deps, principal: Principal, request: build_event_pb2.AppendBuildEventsRequest
) -> build_event_pb2.AppendBuildEventsResponse:
    done = await EVENTS.append(d, principal, request.build_id, wire.event_entries(request), request.first_sequence)
    return build_event_pb2.AppendBuildEventsResponse(
        first_sequence=done.first, last_sequence=done.last, already_written=done.already_written
    )


async def list_build_events(
    d: Deps, principal: Principal, request: build_event_pb2.ListBuildEventsRequest
) -> build_event_pb2.ListBuildEventsResponse:
    events, token = await EVENTS.list_page(d, principal, request, wire.types(request.types))
    return build_event_pb2.ListBuildEventsResponse(events=events, next_page_token=token)


def stream_build_events(
    d: Deps, principal: Principal, request: build_event_pb2.StreamBuildEventsRequest
) -> AsyncIterator[bytes]:
    """Serialized StreamBuildEventsResponse messages (see stream_build_logs)."""
    req = _stream_request(principal, request, request.tail_events, "tail_events", wire.types(request.types))
    return EVENTS.stream(d, req)
