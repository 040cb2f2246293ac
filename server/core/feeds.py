"""BuildLogService and BuildEventService: one implementation, two kinds.

Both services' RPCs are here (`append_build_logs`, `stream_build_events`,
...), over one `FeedStreams` per kind.

A stream is a follower of the build's feed (server.live.reader.Follower,
which serves its cursor from the process's ring or the database); this
module frames its batches as responses and ends the stream when the server
shuts down or the caller's credential expires. Every message and List page
carries at most MAX_MESSAGE_BYTES of serialized items (and at least one
item): the store cuts its read on an upper bound of each row's size, and
the reader (or, for a List page, this module) cuts exactly on the real
sizes, so a page of big lines holds fewer of them and its cursor or page
token names exactly the last one sent.

A stream whose database read fails ends with UNAVAILABLE naming the cursor
to resume from, like a stream ended by shutdown.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from buildplatform.v1 import build_event_pb2, build_log_pb2
from google.protobuf.message import Message

from server.core import feeds_wire as wire
from server.core import guard
from server.core.deps import Deps
from server.core.feeds_wire import stream_response
from server.core.log_text import (
    read_build_log_text as read_build_log_text,  # BuildLogService.ReadBuildLogText
)
from server.core.masking import mask_entries
from server.core.wire import from_timestamp, validate_id
from server.domain.access import Principal
from server.domain.errors import InvalidArgument, Unauthenticated, Unavailable
from server.domain.limits import FEED_PAGE_SIZE, MAX_BATCH
from server.domain.limits import RESPONSE_BYTES as MAX_MESSAGE_BYTES
from server.domain.validation import Checker
from server.live import search
from server.live.reader import Batch, Reason, page
from server.live.records import item_size, varint
from server.live.tiers import Source
from server.store import feeds
from server.store.db import DatabaseUnavailable, call_deadline
from server.store.feeds import Kind
from server.telemetry import stream_caught_up

STALE_MASKER_RETRIES = 5  # secrets registered between masking and writing, each time: then UNAVAILABLE


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
        self, kind: Kind, page_type: type[Message], field: str,
        masked: tuple[tuple[int, ...], tuple[int, ...]],
    ) -> None:
        self.kind = kind
        self.page_type = page_type   # the List response, whose field 1 (`field`) holds the items
        self.field = field
        self.masked = masked   # indexes of an entry's text and JSON text columns (mask_entries)

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
        entries, more = await page(
            d.hub, self.kind, build_id, after=after, limit=limit, max_bytes=MAX_MESSAGE_BYTES, values=values
        )
        # +4: the item's tag and length prefix in the page's repeated field.
        kept = feeds.fitting((item_size(entry.wire) + 4 for entry in entries), MAX_MESSAGE_BYTES)
        more = more or kept < len(entries)
        entries = entries[:kept]
        token = d.tokens.encode(self.kind.table, filters, [entries[-1].seq]) if more else ""
        # The entries are the page's repeated field 1 already (as in a stream response).
        items = list(getattr(self.page_type.FromString(b"".join(entry.wire for entry in entries)), self.field))
        return items, token

    async def stream(self, d: Deps, req: StreamRequest) -> AsyncIterator[bytes]:
        """Serialized StreamBuild{Logs,Events}Response messages (see feeds_wire).

        The follower (server.live) gives the batches; this frames them, and
        ends the stream when the server shuts down or the credential expires.
        Any failed database read ends the stream with UNAVAILABLE naming the
        cursor of the last message sent, from which the client resumes."""
        resume = req.after  # the cursor of the last message sent
        try:
            await guard.require(d, req.principal, "build", req.build_id)
            async with d.hub.follower(
                self.kind, req.build_id, after=req.after, follow=req.follow, since=req.since, tail=req.tail,
                values=req.values, until=req.principal.expire_time,
            ) as follower:
                while True:
                    try:
                        got = await follower.next_batch(MAX_MESSAGE_BYTES)
                    except Unavailable as error:   # the archive's object store: resume from here
                        raise Unavailable(
                            f"{error.message}; resume with after_sequence={resume}", retry_after=error.retry_after,
                            metadata={**error.metadata, "after_sequence": str(resume)},
                        ) from error
                    if isinstance(got, Batch):
                        resume = got.cursor
                        yield stream_response(got.items, got.cursor, got.caught_up)
                        if got.caught_up:
                            stream_caught_up()   # the stream's span ends with its catch-up
                    elif got.reason is Reason.SHUTDOWN:
                        raise Unavailable(
                            f"the server is shutting down: resume on another replica with after_sequence={got.cursor}",
                            metadata={"after_sequence": str(got.cursor)},
                        )
                    elif got.reason is Reason.EXPIRED:
                        raise _expired(got.cursor)
                    else:
                        return
        except DatabaseUnavailable as error:
            # The database's own message stays in the server (it may name
            # hosts); the client learns what to do.
            raise Unavailable(
                f"the database is unavailable: resume with after_sequence={resume}",
                retry_after=1.0, metadata={"after_sequence": str(resume)},
            ) from error

    async def append(
        self, d: Deps, principal: Principal, build_id: str, entries: Sequence[Sequence[Any]], first_sequence: int
    ) -> feeds.Appended:
        validate_id("build_id", build_id)
        if first_sequence < 0:
            raise InvalidArgument.one("first_sequence", "must not be negative")
        await guard.require(d, principal, "build", build_id)
        plain, encoded = self.masked
        for _ in range(STALE_MASKER_RETRIES):
            # Masked before anything is written (docs/secrets.md); the store
            # refuses a masker older than the build's secrets (StaleSecrets).
            version, masker = await d.maskers.get(d.db, build_id)
            masked = mask_entries(masker, entries, plain, encoded)
            try:
                done = await feeds.append(
                    d.db, self.kind, build_id, masked, first_sequence=first_sequence, now=d.clock(),
                    secrets_version=version, unmasked=None if masked is entries else entries,
                )
            except feeds.StaleSecrets:
                d.maskers.forget(build_id)
                continue
            break
        else:
            raise Unavailable(f"the secrets of build {build_id!r} changed during each attempt to append; retry")
        if not done.already_written:
            # Committed: wake this process's followers now, and the other
            # replicas' with the notifier's next tick (server.live.notifier).
            d.hub.appended(self.kind, build_id, done.last)
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


LOGS = FeedStreams(feeds.LOGS, build_log_pb2.ListBuildLogsResponse, "logs", ((1,), (2,)))          # message; metadata
EVENTS = FeedStreams(feeds.EVENTS, build_event_pb2.ListBuildEventsResponse, "events", ((), (1,)))  # data


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


def search_build_logs(
    d: Deps, principal: Principal, request: build_log_pb2.SearchBuildLogsRequest
) -> AsyncIterator[bytes]:
    """Serialized SearchBuildLogsResponse messages (server.live.search
    scans; this checks the request and frames the messages). The request is
    checked before the stream starts: a bad one sends nothing."""
    build_id = validate_id("build_id", request.build_id)
    values = wire.levels(request.levels)
    check = Checker()
    if request.after_sequence < 0:
        check.add("after_sequence", "must not be negative")
    if not 0 <= request.context_lines <= search.MAX_CONTEXT_LINES:
        check.add("context_lines", f"must be 0 to {search.MAX_CONTEXT_LINES}, got {request.context_lines}")
    if not 0 <= request.max_matches <= search.MAX_MATCHES:
        check.add("max_matches", f"must be 0 (meaning {search.DEFAULT_MAX_MATCHES}) to {search.MAX_MATCHES}, "
                  f"got {request.max_matches}")
    check.done()
    query = search.Query(request.query, regex=request.regex, ignore_case=request.ignore_case)
    wanted = search.Search(
        query, values, request.context_lines, request.max_matches or search.DEFAULT_MAX_MATCHES,
        lines=not request.omit_lines,
    )
    return _search(d, principal, build_id, wanted, request.after_sequence)


async def _search(
    d: Deps, principal: Principal, build_id: str, wanted: search.Search, after: int
) -> AsyncIterator[bytes]:
    resume = after
    try:
        await guard.require(d, principal, "build", build_id)
        source = Source(d.hub, feeds.LOGS, build_id)
        upto = (await source.position()).last   # LOGS_EXPIRED for expired logs
        # The scan stops in time to send its last message before the call's
        # deadline, and after MAX_SEARCH_SECONDS whatever the deadline.
        now = time.monotonic()
        deadline = now + search.MAX_SEARCH_SECONDS
        if (call_ends := call_deadline.get()) is not None:
            deadline = min(deadline, call_ends - min(search.DEADLINE_RESERVE, (call_ends - now) / 4))
        async for message in search.scan(
            source, wanted, after=after, upto=upto, budget_bytes=MAX_MESSAGE_BYTES, deadline=deadline,
            progress_seconds=d.hub.heartbeat_seconds,
        ):
            resume = message.cursor
            yield _search_response(message)
    except DatabaseUnavailable as error:
        raise Unavailable(f"the database is unavailable: resume with after_sequence={resume}") from error


def _search_response(message: search.Message) -> bytes:
    """A SearchBuildLogsResponse, as SerializeToString writes it."""
    parts = [*message.hits]
    if message.cursor:
        parts.append(b"\x10" + varint(message.cursor))
    if message.done:
        parts.append(b"\x18\x01")
    if message.matches:
        parts.append(b"\x20" + varint(message.matches))
    return b"".join(parts)
