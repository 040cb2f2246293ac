"""Where a build's entries are read from: its tier.

A build's logs and events are in one tier, recorded on its row
(builds.archive_state): 'hot' (rows in PostgreSQL), 'archived' (chunks in
the object store, indexed by archive_chunks) or 'expired' (gone). `Source`
reads a range of entries from whichever tier holds them, and answers exactly
what a read of the hot rows answers: the same entries, cut at the same place
(the archive recomputes each entry's stored size bound, records.stored_bound),
so a reader cannot tell the tiers apart except by speed.

A hot read checks the tier in its own statement; when the build was archived
meanwhile, the Source moves to the archive (its rows are still there, but
no longer read: their partition is dropped after a grace period). An archive
read asks the index for the chunks it needs (those whose seq range meets the
range read and, with a filter, that hold one of its values), fetches each
with one ranged GET, checks it and decodes it; the last chunk decoded is kept
for the next read of the same reader, never more. A chunk that is missing or
corrupt is DATA_LOSS naming build and chunk (with a log line and a metric);
the object store unreachable is UNAVAILABLE with retry advice, within the
call's deadline (the same budget as a database read).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from server.archive import chunks as codec
from server.archive.objects import ObjectMissing
from server.domain.errors import Unavailable
from server.domain.feeds import chunk_lost, logs_expired
from server.live.records import TO_ENTRY, Entry, stored_bound
from server.store import feeds
from server.store.feeds import Kind

if TYPE_CHECKING:
    from server.live.hub import Hub

log = logging.getLogger(__name__)

HOT = "hot"
EXPIRED = "expired"
INDEX_PAGE = 8   # chunks per index query of a read (a read needs one or two)


def _seq(entry: Entry) -> int:
    return entry.seq


class Row(NamedTuple):
    """A hot line as a search scans it (Source.read_lines): its sequence,
    filter value and message; Source.entries makes the Entry of those sent."""

    seq: int
    value: str
    message: str


class Source:
    """The entries of one build and kind, from the tier that holds them."""

    def __init__(self, hub: Hub, kind: Kind, build_id: str, tier: str = HOT) -> None:
        self._hub = hub
        self._kind = kind
        self._build_id = build_id
        self.build_id = build_id
        self._to_entry = TO_ENTRY[kind.name]
        self.tier = tier
        self.gone = False   # the last read found no build (it was deleted)
        # The last chunk decoded: (chunk, the cursor it was decoded after, its entries after it).
        self._chunk: tuple[int, int, list[Entry]] | None = None

    async def read(
        self, after: int, upto: int | None, *, values: Sequence[str], limit: int, max_bytes: int
    ) -> tuple[list[Entry], bool]:
        """The matching entries with after < seq (<= upto), oldest first, at
        most `limit`, cut after the one whose running sum of stored size
        bounds reaches max_bytes (the first always comes), and whether
        matching entries were left: server.store.feeds.Read, from either tier
        (nothing, and `gone`, when the build was deleted)."""
        if self.tier == HOT:
            rows = await feeds.read(self._hub.db, feeds.Read(
                self._kind, self._build_id, after, limit=limit, max_bytes=max_bytes, upto=upto, values=values,
            ))
            if rows.tier is None or rows.tier == HOT:
                self.gone = rows.tier is None
                return [self._to_entry(row) for row in rows.rows], rows.more
            await self.moved(rows.tier)
        if upto is None:
            upto = (await self.position()).last
        return await self._archived(after, upto, values=values, limit=limit, max_bytes=max_bytes)

    async def read_lines(
        self, after: int, upto: int, *, values: Sequence[str], limit: int, max_bytes: int
    ) -> tuple[Sequence[Entry | Row], bool]:
        """What `read` reads, but hot lines come as Rows (their sequence,
        value and message only): a reader that looks at every line and sends
        few of them (a search) makes the Entries of those it sends (entries)."""
        if self.tier == HOT:
            lines, more, tier = await feeds.scan(
                self._hub.db, self._kind, self._build_id, after, upto, values=values, limit=limit, max_bytes=max_bytes,
            )
            if tier is None or tier == HOT:
                self.gone = tier is None
                return [Row(*line) for line in lines], more
            await self.moved(tier)
        return await self._archived(after, upto, values=values, limit=limit, max_bytes=max_bytes)

    async def entries(self, lines: Sequence[Entry | Row]) -> dict[int, Entry]:
        """The Entries of lines read_lines gave, by sequence (hot ones read
        whole, in one query)."""
        found = {line.seq: line for line in lines if isinstance(line, Entry)}
        wanted = [line.seq for line in lines if isinstance(line, Row)]
        if wanted:
            for row in await feeds.rows_at(self._hub.db, self._kind, self._build_id, wanted):
                entry = self._to_entry(row)
                found[entry.seq] = entry
        return found

    async def position(self) -> feeds.Position:
        """The build's position; its tier becomes this Source's."""
        found = await feeds.position(self._hub.db, self._kind, self._build_id)
        if found.tier != self.tier:
            await self.moved(found.tier, found.expire_time)
        return found

    async def moved(self, tier: str, expire_time: datetime | None = None) -> None:
        """The build's logs left the tier this Source read: LOGS_EXPIRED when
        they are gone, else read the archive from now on."""
        if tier == EXPIRED:
            if expire_time is None:
                expire_time = (await feeds.position(self._hub.db, self._kind, self._build_id)).expire_time
            raise logs_expired(self._build_id, expire_time)
        self.tier = tier

    # -- the archive -----------------------------------------------------------------

    async def _archived(
        self, after: int, upto: int, *, values: Sequence[str], limit: int, max_bytes: int
    ) -> tuple[list[Entry], bool]:
        wanted = frozenset(values)
        found: list[Entry] = []
        before = 0   # the stored bounds of `found`, summed (what the hot read's window sums)
        cursor = after
        while True:
            index = await feeds.chunks(
                self._hub.db, self._kind, self._build_id, after=cursor, upto=upto, values=values, limit=INDEX_PAGE
            )
            if not index:
                return found, False
            for row in index:
                # Only the entries after the cursor are made (a tail of 10 makes 10,
                # not the chunk's thousands); reads of one reader only move forward.
                entries = await self._entries(row, after=cursor)
                for entry in entries[bisect.bisect_right(entries, cursor, key=_seq):]:
                    if entry.seq > upto:
                        return found, False
                    if wanted and entry.value not in wanted:
                        continue
                    if len(found) == limit or before >= max_bytes:
                        return found, True
                    found.append(entry)
                    before += stored_bound(entry)
                cursor = row["last_seq"]

    async def since_cursor(self, after: int, upto: int, since: datetime) -> int:
        """The cursor before the first entry in (after, upto] created at or
        after `since` (upto when there is none), from the archive: the index
        finds the chunk (create_time does not decrease with seq)."""
        at = since.timestamp()
        cursor = after
        while True:
            index = await feeds.chunks(
                self._hub.db, self._kind, self._build_id, after=cursor, upto=upto, since=since, limit=1
            )
            if not index:
                return upto
            entries = await self._entries(index[0])
            for entry in entries[bisect.bisect_right(entries, cursor, key=_seq):]:
                if entry.seq > upto:
                    return upto
                if entry.time >= at:
                    return max(after, entry.seq - 1)
            cursor = index[0]["last_seq"]

    async def tail_cursor(self, after: int, upto: int, tail: int, values: Sequence[str]) -> int:
        """The cursor before the last `tail` matching entries in (after,
        upto], from the archive: the index's counts of each value, newest
        chunk first, so only the chunk where the tail starts is fetched."""
        if not values:
            return max(after, upto - tail)   # seq has no gaps
        wanted = frozenset(values)
        need = tail
        cursor = upto
        while True:
            index = await feeds.chunks(
                self._hub.db, self._kind, self._build_id, after=after, upto=cursor, values=values,
                limit=INDEX_PAGE, descending=True,
            )
            if not index:
                return after
            for row in index:
                if row["first_seq"] > after and row["last_seq"] <= upto:
                    held = sum(n for name, n in zip(row["value_names"], row["value_counts"], strict=True)
                               if name in wanted)
                    if held < need:
                        need -= held
                        cursor = row["first_seq"] - 1
                        continue
                entries = await self._entries(row)
                matching = [e for e in entries if after < e.seq <= upto and e.value in wanted]
                if len(matching) >= need:
                    return matching[-need].seq - 1
                need -= len(matching)
                cursor = row["first_seq"] - 1

    async def _entries(self, row: dict[str, Any], *, after: int = -1) -> list[Entry]:
        """The entries of one chunk with seq > `after` (all of them by
        default): one ranged GET, the whole frame checked, only those decoded
        into Entries."""
        if self._chunk is not None and self._chunk[0] == row["chunk"] and self._chunk[1] <= after:
            return self._chunk[2]
        store = self._hub.archive
        if store is None:
            raise Unavailable(
                f"build {self._build_id!r}'s {self._kind.name}s are archived, and this server has no archive "
                "(ARCHIVE_URL is empty): set ARCHIVE_URL to the store they were archived to, or ask another replica",
                retry_after=5.0,
            )
        meta = codec.ChunkMeta.from_row(row)
        try:
            frame = await store.get(meta.object_key, meta.byte_offset, meta.byte_end, timeout=self._hub.db.budget()[0])
            entries = codec.decode(frame, meta, after=after if after > meta.first_seq else None)
        except ObjectMissing as error:
            raise self._lost(meta, corrupt=False, detail=error.detail) from None
        except codec.ChunkCorrupt as error:
            raise self._lost(meta, corrupt=True, detail=error.detail) from None
        if self._hub.metrics is not None:
            self._hub.metrics.archive_chunk_reads.labels(self._kind.name).inc()
        self._chunk = (meta.chunk, after, entries)
        return entries

    def _lost(self, meta: codec.ChunkMeta, *, corrupt: bool, detail: str) -> Exception:
        error = chunk_lost(self._build_id, self._kind.name, meta.chunk, meta.object_key, corrupt=corrupt, detail=detail)
        log.error("%s", error.message)
        if self._hub.metrics is not None:
            self._hub.metrics.archive_read_errors.labels(self._kind.name, "corrupt" if corrupt else "missing").inc()
        return error
