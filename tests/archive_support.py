"""Archiving one build from a test or a bench, exactly as the archiver writes it.

`archive_build` reads a finished build's hot rows (logs and events, with a
server-side cursor: a 1,000,000-line build is never in memory, only its
compressed frames are), converts them with the live feed's converters,
encodes chunks with server.archive.chunks, writes one object per kind with
server.archive.objects, and commits the index and the tier in one
transaction: what server.archive.job does for the build it claims, without
the claim (a test archives the build it names, at the moment it chooses, and
may make the chunks small to have many of them). With `drop_hot`, the
build's hot rows are then deleted, as dropping their partition does later: a
read that still used them would miss lines.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from server.archive.chunks import Encoder
from server.archive.objects import new_attempt, object_key, open_store
from server.live.records import TO_ENTRY
from server.store.feeds import EVENTS, LOGS


@dataclass(frozen=True)
class Archived:
    keys: list[str]   # the objects written: one per kind that had rows
    chunks: int       # the index rows written, both kinds together


def archive_build(
    database_url: str, archive_url: str, build_id: str, *, chunk_bytes: int = 1 << 20, drop_hot: bool = True,
    timeout: float = 120.0,
) -> Archived:
    """Archive a finished build's logs and events now (see the module's docstring)."""
    attempt = new_attempt()
    store = open_store(archive_url)
    metas = []
    keys = []
    for kind in (LOGS, EVENTS):
        key = object_key(build_id, kind.name, attempt)  # type: ignore[arg-type]
        encoder = Encoder(build_id, kind.name, key, chunk_bytes=chunk_bytes)
        to_entry = TO_ENTRY[kind.name]
        with psycopg.connect(database_url) as pg, pg.cursor(f"archive_{kind.name}", row_factory=dict_row) as rows:
            rows.itersize = 10_000
            rows.execute(f"SELECT * FROM {kind.table} WHERE build_id = %s ORDER BY seq", (build_id,))
            made = list(encoder.encode(to_entry(row) for row in rows))
        if not made:
            continue
        asyncio.run(store.put(key, [frame for frame, _ in made], timeout=timeout))
        keys.append(key)
        metas.extend(meta for _, meta in made)
    with psycopg.connect(database_url) as pg:
        with pg.transaction():
            for meta in metas:
                row = meta.row()
                pg.execute(f"INSERT INTO archive_chunks ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",
                           list(row.values()))
            pg.execute("UPDATE builds SET archive_state = 'archived', archive_time = now() WHERE id = %s", (build_id,))
        if drop_hot:
            for kind in (LOGS, EVENTS):
                pg.execute(f"DELETE FROM {kind.table} WHERE build_id = %s", (build_id,))
            pg.commit()
    return Archived(keys, len(metas))
