"""A reader's cursor over one build's logs or events: `Follower`.

A follower moves its cursor (the last sequence considered) forward through
the build's feed. While the cursor is inside the process's ring
(server.live.feed) it reads from memory, otherwise from PostgreSQL in pages
(a follower behind the ring, or a reader that does not follow); either way
one batch is everything available up to the byte budget, never one batch per
row. The store cuts its read on an upper bound of each row's size, and this
module cuts exactly on the real sizes, so a batch of big lines holds fewer of
them and its cursor names exactly the last one sent.

The caller has one verb, `next_batch(max_bytes)`, and frames what it gets;
it decides nothing about rings, positions or heartbeats. A failed database
read raises server.store.db.DatabaseUnavailable: the caller's last batch's
cursor is where its reader resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from server.domain.errors import NotFound
from server.domain.feeds import logs_expired
from server.domain.status import TERMINAL
from server.live.records import Entry
from server.live.tiers import EXPIRED, Source
from server.store import feeds
from server.store.feeds import Kind

if TYPE_CHECKING:
    from server.live.feed import Feed
    from server.live.hub import Hub

DB_PAGE = 1000  # rows per catch-up read from the database (and the batch's byte budget)


class Batch(NamedTuple):
    """One message's worth: the matching entries' wires (see
    server.live.records), the cursor after them, and whether this batch
    reaches the backlog's end (true once per reader). No items and not
    caught_up: a heartbeat."""

    items: list[bytes]
    cursor: int
    caught_up: bool


class Reason(enum.Enum):
    DONE = "done"              # everything was sent: the reader ends normally
    SHUTDOWN = "shutdown"      # the process is shutting down
    EXPIRED = "expired"        # the time given as `until` has passed


class Stop(NamedTuple):
    """No more batches, and why; `cursor` is where to resume from."""

    reason: Reason
    cursor: int


class Follower:
    """A cursor over a build's feed of one kind (made by Hub.follower)."""

    def __init__(
        self, hub: Hub, kind: Kind, build_id: str, feed: Feed | None, event: asyncio.Event | None, *,
        values: Sequence[str], until: float | None,
    ) -> None:
        self._hub = hub
        self._kind = kind
        self._build_id = build_id
        self._feed = feed              # None: not following (a backlog read)
        self._event = event            # set when the feed has news (or the ticker ticks)
        self._values = values
        self._wanted = frozenset(values)
        self._until = until
        self._source = Source(hub, kind, build_id)
        self._measured = None if hub.metrics is None else hub.metrics.feed[kind.name]
        self._cursor = 0
        self._upto = 0                 # the backlog's end when the reader started
        self._final: int | None = None  # the last sequence, once the build finished
        self._caught_up = False
        self._sent = 0.0               # loop time of the last batch
        self._resume = 0               # the cursor of the last batch given
        # What the last call returned and has yet to account for: "batch"
        # (a message: then the checks of its round), "heartbeat", or None.
        self._pending: str | None = None
        self._start = 0                # the cursor before the last read
        self._lag_from: float | None = None

    @classmethod
    async def start(
        cls, hub: Hub, kind: Kind, build_id: str, feed: Feed | None, event: asyncio.Event | None, *,
        after: int, since: datetime | None, tail: int, values: Sequence[str], until: float | None,
    ) -> Follower:
        follower = cls(hub, kind, build_id, feed, event, values=values, until=until)
        found, cursor = await feeds.start(hub.db, kind, build_id, after=after, since=since, tail=tail, values=values)
        if found.tier == EXPIRED:
            raise logs_expired(build_id, found.expire_time)
        upto = found.last
        if cursor is None:   # archived: the same start, from the archive's index
            source = follower._source
            source.tier = found.tier
            cursor = after
            if since is not None and cursor < upto:
                cursor = await source.since_cursor(cursor, upto, since)
            if tail > 0 and cursor < upto:
                cursor = await source.tail_cursor(cursor, upto, tail, values)
        follower._upto, follower._cursor, follower._resume = upto, cursor, after
        follower._final = upto if found.status in TERMINAL else None
        follower._sent = asyncio.get_running_loop().time()
        return follower

    async def next_batch(self, max_bytes: int) -> Batch | Stop:
        """The next batch to send, at most max_bytes of items (at least one
        item), waiting for one when following; a heartbeat after a silent
        heartbeat period; Stop when there is nothing more to send."""
        loop = asyncio.get_running_loop()
        feed = self._feed
        pending, self._pending = self._pending, None
        if pending is not None:
            self._sent = loop.time()
        if pending == "heartbeat":
            # Since notifications are only hints, the database says whether one was missed.
            assert feed is not None
            status, last, *_ = await feeds.position(self._hub.db, self._kind, self._build_id)
            if status in TERMINAL:
                self._final = last
            feed.announce(last)  # the feed reads up to `last` if it has not yet
        elif pending == "batch":
            if self._lag_from is not None and self._measured is not None:
                # A live message: from its oldest line's commit to now.
                self._measured.lag.observe(time.time() - self._lag_from)
            stop = await self._settle(loop)
            if stop is not None:
                return stop
        while True:
            if self._event is not None:
                self._event.clear()
            start = cursor = self._cursor
            if feed is not None and feed.covers(cursor) and not (feed.archived and cursor >= (feed.head or 0)):
                entries = feed.after(cursor, max_bytes)
                if entries:
                    cursor = entries[-1].seq
            else:
                # Behind the ring, or no ring: a bounded read up to a
                # committed position (the backlog's end, or what the feed
                # has seen, or the last sequence of a build archived while
                # followed), which lets the cursor pass rows a filter skips.
                bound = self._upto
                if feed is not None:
                    bound = max(bound, feed.head or 0, (feed.final or 0) if feed.archived else 0)
                if self._measured is not None and feed is not None and feed.head is not None:
                    self._measured.database_reads.inc()   # a follower behind the ring
                entries, cursor = await self._read(cursor, bound, max_bytes)
            self._cursor, self._start = cursor, start
            wanted = self._wanted
            batch = [e.wire for e in entries if not wanted or e.value in wanted]
            reached = not self._caught_up and cursor >= self._upto
            if batch or reached:
                self._lag_from = entries[0].time if self._caught_up and batch else None
                self._caught_up = self._caught_up or reached
                self._pending = "batch"
                self._resume = cursor
                return Batch(batch, cursor, reached)
            stop = await self._settle(loop)
            if stop is not None:
                return stop

    async def _settle(self, loop: asyncio.AbstractEventLoop) -> Stop | Batch | None:
        """After a read: Stop, a heartbeat to send, or None once there may
        be more to read (having waited for it when there was not)."""
        cursor, feed = self._cursor, self._feed
        if self._caught_up and feed is None:
            return Stop(Reason.DONE, cursor)
        if cursor != self._start and (
            feed is None or feed.head is None or cursor < feed.head or not feed.covers(cursor) or feed.archived
        ):
            return None  # more may be ready now (a ring read that reached the ring's head has all there is)
        if feed is None or (self._caught_up and self._final is not None and cursor >= self._final):
            return Stop(Reason.DONE, cursor)
        if feed.final is not None:
            self._final = feed.final
            if cursor >= feed.final:
                return Stop(Reason.DONE, cursor)
        if self._hub.shutting_down:
            return Stop(Reason.SHUTDOWN, cursor)
        until = self._until
        if until is not None and time.time() >= until:
            return Stop(Reason.EXPIRED, self._resume)
        assert self._event is not None
        if feed.error is not None or not self._hub.connected.is_set():
            # The feed could not read, or notifications may be lost (no
            # LISTEN connection): ask the database now. If it does not
            # answer, the reader ends with its cursor instead of waiting for
            # a heartbeat; if it does, the feed reads on.
            status, last, *_ = await feeds.position(self._hub.db, self._kind, self._build_id)
            feed.error = None
            feed.announce(last)
            if status in TERMINAL:
                self._final = last
                if cursor >= last:
                    return Stop(Reason.DONE, cursor)
        if loop.time() - self._sent >= self._hub.heartbeat_seconds:
            # Silent for a heartbeat period (the hub's ticker wakes idle
            # followers): a message keeps idle proxies from cutting the stream.
            self._pending = "heartbeat"
            self._resume = cursor
            return Batch([], cursor, False)
        if until is None:
            # A bare wait: no timer per wait (the ticker provides the
            # heartbeat), so an idle follower holds as little as possible.
            await self._event.wait()
        else:
            # A reader whose time is limited ends when it is up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, until - time.time())):
                    await self._event.wait()
        return None

    async def _read(self, cursor: int, bound: int, max_bytes: int) -> tuple[list[Entry], int]:
        """The matching entries after `cursor` up to `bound`, cut at
        max_bytes, and the cursor after them: the last entry's when the read
        was cut, else `bound` (every matching row up to it was read)."""
        entries, more = await self._source.read(cursor, bound, values=self._values, limit=DB_PAGE, max_bytes=max_bytes)
        kept = feeds.fitting((len(entry.wire) for entry in entries), max_bytes)
        if more or kept < len(entries):
            return entries[:kept], entries[kept - 1].seq
        return entries, max(cursor, bound)


async def page(
    hub: Hub, kind: Kind, build_id: str, *, after: int, limit: int, max_bytes: int, values: Sequence[str]
) -> tuple[list[Entry], bool]:
    """A List page: the matching entries after `after` (at most `limit`, cut
    on the store's size bounds at max_bytes) and whether more were left,
    from whichever tier holds them; NotFound for a missing build,
    LOGS_EXPIRED for expired logs."""
    source = Source(hub, kind, build_id)
    entries, more = await source.read(after, None, values=values, limit=limit, max_bytes=max_bytes)
    if source.gone:
        raise NotFound("build", build_id, field="build_id")
    return entries, more
