"""Archiving one build from a test, exactly as the archiver writes it.

`archive_build` reads a finished build's hot rows, converts them with the
live feed's converters, encodes chunks with server.archive.chunks, writes the
objects with server.archive.objects, and commits the index and the tier in
one transaction: what server.archive.job does for the build it claims,
without the claim (a test archives the build it names, at the moment it
chooses, and may make the chunks small to have many of them). With
`drop_hot`, the build's hot rows are then deleted, as dropping their
partition does later: a read that still used them would miss lines.
"""

from __future__ import annotations

import asyncio

import psycopg
from psycopg.rows import dict_row

from server.archive.chunks import Encoder
from server.archive.objects import new_attempt, object_key, open_store
from server.live.records import TO_ENTRY
from server.store.feeds import EVENTS, LOGS

COLUMNS = (
    "build_id, kind, chunk, object_key, byte_offset, byte_length, first_seq, last_seq, first_time, last_time, "
    "count, raw_bytes, wire_bytes, crc32, value_names, value_counts"
)


async def _archive(database_url: str, archive_url: str, build_id: str, chunk_bytes: int, drop_hot: bool) -> list[str]:
    store = open_store(archive_url)
    attempt = new_attempt()
    metas = []
    keys = []
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for kind in (LOGS, EVENTS):
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(f"SELECT * FROM {kind.table} WHERE build_id = %s ORDER BY seq", (build_id,))
                rows = await cur.fetchall()
            if not rows:
                continue
            key = object_key(build_id, kind.name, attempt)  # type: ignore[arg-type]
            encoder = Encoder(build_id, kind.name, key, chunk_bytes=chunk_bytes)
            frames = []
            for frame, meta in encoder.encode(TO_ENTRY[kind.name](row) for row in rows):
                frames.append(frame)
                metas.append(meta)
            await store.put(key, frames, timeout=30)
            keys.append(key)
        async with conn.transaction():
            for meta in metas:
                row = meta.row()
                await conn.execute(
                    f"INSERT INTO archive_chunks ({COLUMNS}) VALUES ({', '.join(f'%({c})s' for c in COLUMNS.split(', '))})",
                    row,
                )
            await conn.execute(
                "UPDATE builds SET archive_state = 'archived', archive_time = now() WHERE id = %s", (build_id,)
            )
        if drop_hot:
            for kind in (LOGS, EVENTS):
                await conn.execute(f"DELETE FROM {kind.table} WHERE build_id = %s", (build_id,))
    return keys


def archive_build(
    database_url: str, archive_url: str, build_id: str, *, chunk_bytes: int = 1 << 20, drop_hot: bool = True
) -> list[str]:
    """Archive a finished build now; returns the object keys written."""
    return asyncio.run(_archive(database_url, archive_url, build_id, chunk_bytes, drop_hot))
