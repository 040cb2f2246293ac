"""Masking at ingest: each process keeps, per build it appends to, the
masker made from the build's registered secrets at one secrets_version
(server.domain.secrets makes and applies it; server.store.secrets reads
the values). An append names that version and the store refuses it when
the build's has moved (secrets registered since, on this replica or
another): the masker is then made again and the append retried, so no
replica ever writes with an outdated set. A build with no secrets costs one
read per process (its first append), then nothing but the version's
comparison inside the append statement."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from server.domain.secrets import Masker
from server.store import secrets
from server.store.db import Database

CACHED_BUILDS = 4096            # builds whose maskers a process keeps (least recently used go) ...
CACHED_CHARACTERS = 16 << 20    # ... and the characters of patterns they hold together, at most


class Maskers:
    """build_id -> (secrets_version, Masker), least recently used first out."""

    def __init__(self, size: int = CACHED_BUILDS, characters: int = CACHED_CHARACTERS) -> None:
        self._size = size
        self._characters = characters
        self._held = 0
        self._cache: OrderedDict[str, tuple[int, Masker]] = OrderedDict()

    async def get(self, db: Database, build_id: str) -> tuple[int, Masker]:
        found = self._cache.get(build_id)
        if found is not None:
            self._cache.move_to_end(build_id)
            return found
        registered = await secrets.load(db, build_id)
        if registered.values:
            # Made in a thread: many long values take tens of milliseconds
            # (measured: ~15 ms for 200 values, ~150 ms for 20 keys of 40 lines
            # on a busy machine), which the event loop's other calls need not wait for.
            masker = await asyncio.to_thread(Masker, registered.values, shapes=registered.shapes)
        else:
            masker = Masker(shapes=registered.shapes)
        made = (registered.version, masker)
        self.forget(build_id)
        self._cache[build_id] = made
        self._held += made[1].size
        while len(self._cache) > 1 and (len(self._cache) > self._size or self._held > self._characters):
            _, (_, dropped) = self._cache.popitem(last=False)
            self._held -= dropped.size
        return made

    def forget(self, build_id: str) -> None:
        dropped = self._cache.pop(build_id, None)
        if dropped is not None:
            self._held -= dropped[1].size


def _json_masked(masker: Masker, value: Any) -> Any:
    """A decoded JSON value with its strings (keys too) masked."""
    if isinstance(value, str):
        return masker.mask(value)
    if isinstance(value, list):
        return [_json_masked(masker, item) for item in value]
    if isinstance(value, dict):
        return {masker.mask(key): _json_masked(masker, item) for key, item in value.items()}
    return value


def mask_entries(
    masker: Masker, entries: Sequence[Sequence[Any]], plain: Sequence[int], encoded: Sequence[int]
) -> Sequence[Sequence[Any]]:
    """`entries` (rows to append) with the text columns at `plain` and the
    JSON text columns at `encoded` masked; `entries` itself when nothing in
    them is to mask (decided in one pass over all their text). A JSON
    column is decoded only when its text holds something to mask (the
    JSON-escaped forms of the secrets are among the patterns), then its
    strings are masked one by one and it is encoded again."""
    places = [(row, i) for row, entry in enumerate(entries) for i in plain]
    places += [(row, i) for row, entry in enumerate(entries) for i in encoded if entry[i] is not None]
    texts = [entries[row][i] for row, i in places]
    result = masker.mask_all(texts)
    if result is None:
        return entries
    out = [list(entry) for entry in entries]
    jsons = set(encoded)
    for (row, i), before, after in zip(places, texts, result, strict=True):
        if after == before:
            continue
        if i in jsons:
            value = _json_masked(masker, json.loads(before))
            out[row][i] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        else:
            out[row][i] = after
    return [tuple(row) for row in out]
