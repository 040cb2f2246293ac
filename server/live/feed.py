"""One followed build's feed of one kind: its ring, read once per wake-up.

For each build followed in this process there is one Feed per kind (logs,
events). On a wake-up the feed reads the new rows ONCE (one query per build
per wake-up, whatever the number of followers), converts them to entries
once, and keeps the most recent ones in a ring bounded in rows and in bytes
(FEED_RING_BYTES); the hub holds the rings of all followed builds to
FEED_TOTAL_BYTES together, by evicting the oldest entries of the largest
rings. Followers (server.live.reader) take from the ring after their own
cursor; one too slow for the ring (its cursor fell behind the ring's start)
reads its own pages from the database, so a slow client costs neither
memory nor the other followers' latency.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import logging
from typing import TYPE_CHECKING

from server.domain.limits import RESPONSE_BYTES
from server.domain.status import TERMINAL
from server.live.records import TO_ENTRY, Entry
from server.live.tiers import HOT
from server.store import feeds
from server.store.db import DatabaseUnavailable
from server.store.feeds import Kind

if TYPE_CHECKING:
    from server.live.hub import Hub

log = logging.getLogger(__name__)

RING_CAPACITY = 8192   # rows kept per followed build and kind (and FEED_RING_BYTES)
READ_PAGE = 2000       # rows per feed read (and READ_BYTES)
# Bytes per feed read, at most (and at most the ring's bound): a feed holds
# one read's rows and their entries at once beside its ring.
READ_BYTES = RESPONSE_BYTES


def _seq(entry: Entry) -> int:
    return entry.seq


class Feed:
    """The rows of one build and kind that this process has read, for its followers."""

    def __init__(self, hub: Hub, kind: Kind, build_id: str) -> None:
        self.hub = hub
        self.kind = kind
        self.build_id = build_id
        self.to_entry = TO_ENTRY[kind.name]
        self.followers: set[asyncio.Event] = set()
        self.entries: list[Entry] = []          # the ring, in sequence order
        # ends[i]: bytes of every entry this feed ever kept up to entries[i]
        # included, so the entries after a cursor that fit a budget are two
        # bisections away, whatever the ring holds.
        self.ends: list[int] = []
        self.bytes = 0         # sum of len(entry.wire) over the ring
        self.error: DatabaseUnavailable | None = None  # the last read failed with this
        self.base = 0          # the ring holds exactly the rows with base < seq <= head
        self.head: int | None = None            # None until the first read
        self.final: int | None = None           # last sequence once the build finished
        # The build's logs left the hot rows (archived while followed): the
        # feed reads no more, its followers read past its head themselves.
        self.archived = False
        self._wanted = 0       # highest sequence announced by a notification
        self._announcements = 0
        self._stale = False    # the build's position must be read again
        self._task: asyncio.Task[None] | None = None

    # -- reading ---------------------------------------------------------------

    def announce(self, seq: int) -> None:
        self._announcements += 1
        if seq > self._wanted:
            self._wanted = seq
        if self.head is None or self._wanted > self.head:
            self._schedule()

    def refresh(self) -> None:
        """Read the build's position again before anything else: after the
        LISTEN connection was lost, notifications may have been missed."""
        self._stale = True
        self._announcements += 1
        self._schedule()

    def finished(self, final: int) -> None:
        self.final = final
        self.announce(final)
        self.wake()

    def _schedule(self) -> None:
        if self._task is None or self._task.done():
            # In a context of its own: the reads serve every follower, so they
            # must not inherit the deadline (or the trace) of the follower
            # whose notification or arrival happened to start them.
            self._task = asyncio.create_task(self._pump(), context=contextvars.Context())

    def stop(self) -> None:
        """The last follower left: stop reading."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _pump(self) -> None:
        woke = False  # followers were woken after the last change they must see
        try:
            while True:
                if self.head is None or self._stale:
                    woke = False
                    self._stale = False
                    found = await feeds.position(self.hub.db, self.kind, self.build_id)
                    self.error = None
                    if self.head is None:
                        self.head = self.base = found.last
                    self._wanted = max(self._wanted, found.last)
                    if found.status in TERMINAL:
                        self.final = found.last
                    self.archived = found.tier != HOT
                if self._wanted <= self.head or self.archived:
                    break
                announcements = self._announcements
                read = await feeds.read(self.hub.db, feeds.Read(
                    self.kind, self.build_id, self.head,
                    limit=READ_PAGE, max_bytes=max(1, min(READ_BYTES, self.hub.ring_bytes)),
                ))
                if read.tier is not None and read.tier != HOT:
                    self._stale = True   # its position (final) says where its followers stop
                    continue
                if not read.rows:
                    # A notification that arrived during the read may name a
                    # row the read's snapshot missed: read again. Otherwise
                    # the announced rows are gone (the build was deleted).
                    if announcements != self._announcements:
                        continue
                    break
                self.error = None
                self.keep([self.to_entry(row) for row in read.rows])
                self.wake()
                woke = True
        except Exception as error:  # the next notification or heartbeat retries
            woke = False
            # Followers that have sent all the ring holds end with UNAVAILABLE
            # and their cursor (server.live.reader) instead of waiting on a
            # feed that cannot read.
            if isinstance(error, DatabaseUnavailable):
                self.error = error
                log.warning("reading %ss of build %s failed: %s", self.kind.name, self.build_id, error)
            else:
                log.exception("reading %ss of build %s failed", self.kind.name, self.build_id)
        finally:
            if not woke:  # an error, a new final position, or nothing new: let followers look
                self.wake()

    def keep(self, entries: list[Entry]) -> None:
        """Add newly read entries to the ring, then hold it to its bounds."""
        before = end = self.ends[-1] if self.ends else 0
        for entry in entries:
            end += len(entry.wire)
            self.ends.append(end)
        added = end - before
        self.entries.extend(entries)
        self.head = entries[-1].seq
        self.bytes += added
        self.hub.ring_total += added
        self.shrink_to(self.hub.ring_bytes)
        self.hub.hold_total()

    def shrink_to(self, max_bytes: int) -> None:
        """Evict the oldest entries until the ring holds at most RING_CAPACITY
        rows and max_bytes; followers behind the new start read the database."""
        drop = max(len(self.entries) - RING_CAPACITY, 0)
        kept = self.bytes - sum(len(entry.wire) for entry in self.entries[:drop])
        while kept > max_bytes and drop < len(self.entries):
            kept -= len(self.entries[drop].wire)
            drop += 1
        if drop == 0:
            return
        self.hub.ring_total -= self.bytes - kept
        self.bytes = kept
        self.base = self.entries[drop - 1].seq
        del self.entries[:drop]
        del self.ends[:drop]

    def wake(self) -> None:
        for event in self.followers:
            event.set()

    # -- following -------------------------------------------------------------

    def covers(self, cursor: int) -> bool:
        return self.head is not None and cursor >= self.base

    def after(self, cursor: int, max_bytes: int) -> list[Entry]:
        """Entries of the ring after `cursor` (which must be covered): as many
        as fit in max_bytes of messages, and at least one."""
        start = bisect.bisect_right(self.entries, cursor, key=_seq)
        if start == len(self.entries):
            return []
        begin = self.ends[start] - len(self.entries[start].wire)
        stop = max(bisect.bisect_right(self.ends, begin + max_bytes, lo=start), start + 1)
        return self.entries[start:stop]
