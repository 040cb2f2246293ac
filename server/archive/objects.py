"""The object store of the log archive (docs/lifecycle.md#the-object-store).

One small surface over obstore's async API, the same for a local directory,
S3, Google Cloud Storage and Azure Blob Storage:

    store = open_store(settings.archive_url)          # one per process (server.app)
    await store.put(key, frames, timeout=60)          # streamed, multipart
    data = await store.get(key, start, end, timeout=5)
    async for piece in store.stream(key, start, end, timeout=5): ...
    await store.list(prefix, timeout=5); await store.delete(keys, timeout=5)

Every operation is bounded by the `timeout` it is given (seconds) and fails
with one of two errors: ObjectMissing (the object, or the byte range the
index names, is not there: the reader answers DATA_LOSS naming the build and
chunk) or ArchiveUnavailable (the store cannot be reached, is too slow or
refuses this process's credentials: UNAVAILABLE with retry advice, a
server.domain.errors.Unavailable so server.transport.status maps it).

Objects are named `builds/<build_id>/<kind>s-<attempt>.bpc` below the
prefix of ARCHIVE_URL (object_key, build_prefix): everything a build has in
the store is under one prefix, which is what deleting a build lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import obstore
from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError
from obstore.store import LocalStore, from_url

from server.config import parse_archive_url
from server.domain.errors import Unavailable

if TYPE_CHECKING:
    from obstore.store import ObjectStore as Store

Kind = Literal["log", "event"]

# Multipart uploads: parts of PART_BYTES (S3's minimum for every part but the
# last is 5 MiB), at most UPLOAD_CONCURRENCY in flight, so one upload holds at
# most about PART_BYTES * (UPLOAD_CONCURRENCY + 1) in memory whatever the size
# of the object.
PART_BYTES = 5 * 1024 * 1024
UPLOAD_CONCURRENCY = 2

# A streamed get hands over pieces of at least this many bytes (the last may be smaller).
STREAM_PIECE_BYTES = 1024 * 1024

# Advice given with ArchiveUnavailable.
RETRY_AFTER_SECONDS = 2.0

# The HTTP client under the cloud stores: connect quickly or fail (the caller's
# timeout is the real bound; these only keep abandoned requests from living
# on), and a few quick retries of transient errors within the caller's timeout.
_CLIENT_OPTIONS: dict[str, Any] = {"connect_timeout": "5s", "timeout": "120s", "pool_idle_timeout": "60s"}
_RETRY: dict[str, Any] = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=30),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2), "base": 2},
}


class ObjectMissing(Exception):
    """An object, or the byte range of it that the index names, is not in the
    store (deleted behind the service's back, or shorter than written). The
    reader answers DATA_LOSS naming the build and chunk."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"archived object {key!r} {detail}")
        self.key = key
        self.detail = detail


class ArchiveUnavailable(Unavailable):
    """The store could not be reached, did not answer within the timeout, or
    refused this process's credentials. The same call may succeed later.

    `message` is for the caller and names no part of the deployment (no
    bucket, endpoint or path); `detail` is for the server's log: the store
    and the underlying error's first line."""

    def __init__(self, where: str, what: str, why: str, cause: str = "") -> None:
        super().__init__(f"the log archive is unavailable: {what} {why}; retry in a few seconds",
                         retry_after=RETRY_AFTER_SECONDS)
        self.where = where
        self.detail = f"{where}: {what} {why}" + (f" ({cause})" if cause else "")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


def build_prefix(build_id: str) -> str:
    """The prefix under which every object of a build is (ends with '/')."""
    return f"builds/{build_id}/"


def object_key(build_id: str, kind: Kind, attempt: str) -> str:
    """The object one archiving attempt writes for a build's logs or events."""
    return f"{build_prefix(build_id)}{kind}s-{attempt}.bpc"


def new_attempt() -> str:
    """A fresh attempt id: objects of attempts that never committed are told
    apart from the committed one by it."""
    return secrets.token_hex(8)


def attempt_of(key: str) -> str:
    """The attempt id in an object key made by object_key ('' when it is not one)."""
    name = key.rpartition("/")[2]
    stem, dash, rest = name.partition("-")
    return rest.removesuffix(".bpc") if dash and stem in ("logs", "events") and rest.endswith(".bpc") else ""


class ObjectStore:
    """One configured store. `where` names it in errors and logs (the URL
    without credentials: ARCHIVE_URL never holds any, they come from the
    environment of each cloud)."""

    def __init__(self, store: Store, where: str) -> None:
        self._store = store
        self.where = where

    # -- writing --------------------------------------------------------------------------

    async def put(self, key: str, frames: AsyncIterable[bytes] | Iterable[bytes], *, timeout: float) -> int:
        """Write `frames`, laid end to end, as the object `key` (replacing one of
        that name); returns the bytes written. The frames are streamed: at most
        a few PART_BYTES parts are in memory at once, however long the object.
        The object appears whole or not at all (a multipart upload is only
        completed after its last part; a local file is renamed into place).

        An error of `frames` (the caller's own exception) aborts the upload
        and is raised as is. So does running out of time while frames still
        come (ArchiveUnavailable): the frames stop a little before `timeout`
        so that obstore aborts the multipart upload itself; only a store that
        stalls in the last moments is cut off by the hard bound, which leaves
        an incomplete multipart upload to the bucket's lifecycle rule
        (docs/lifecycle.md#the-object-store)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout - min(1.0, timeout / 10)
        written = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal written
            source = aiter(frames) if isinstance(frames, AsyncIterable) else _aiter(frames)
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        frame = await anext(source)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise _OutOfTime from None
                if loop.time() > deadline:
                    raise _OutOfTime
                written += len(frame)
                yield frame

        what = f"writing {key!r}"
        try:
            async with self._bounded(what, timeout):
                await obstore.put_async(
                    self._store, key, counted(), chunk_size=PART_BYTES, max_concurrency=UPLOAD_CONCURRENCY
                )
        except _OutOfTime:
            raise ArchiveUnavailable(self.where, what, f"took longer than {timeout:g} s") from None
        return written

    async def delete(self, keys: Sequence[str], *, timeout: float) -> None:
        """Delete `keys`; keys that are not there are not an error."""
        if not keys:
            return
        async with self._bounded(f"deleting {len(keys)} object(s) ({keys[0]!r}, ...)", timeout):
            try:
                await obstore.delete_async(self._store, list(keys))
            except FileNotFoundError:
                # A local directory stops at the first missing file: one by one.
                for key in keys:
                    with contextlib.suppress(FileNotFoundError):
                        await obstore.delete_async(self._store, key)

    # -- reading --------------------------------------------------------------------------

    async def get(self, key: str, start: int, end: int, *, timeout: float) -> bytes:
        """The bytes [start, end) of `key`, exactly: ObjectMissing when the
        object is not there or is shorter than `end`."""
        if not 0 <= start < end:
            raise ValueError(f"an empty or negative range [{start}, {end}) of {key!r}")
        async with self._bounded(f"reading {key!r}", timeout):
            try:
                data = await obstore.get_range_async(self._store, key, start=start, end=end)
            except FileNotFoundError:
                raise ObjectMissing(key, "is not in the store") from None
            except BaseError as error:
                await self._explain(key, end, error)
                raise
        if len(data) != end - start:
            raise ObjectMissing(key, f"ends before byte {end}: {len(data)} of {end - start} bytes from byte {start}")
        return bytes(data)

    async def stream(
        self, key: str, start: int, end: int, *, timeout: float, piece_bytes: int = STREAM_PIECE_BYTES
    ) -> AsyncIterator[bytes]:
        """The bytes [start, end) of `key` in pieces of at least `piece_bytes`
        (the last may be shorter), for reads of many chunks at once: one request,
        never the whole range in memory. `timeout` bounds the request and each
        piece; a consumer that holds the stream longer than the HTTP client's
        own timeout (120 s) gets ArchiveUnavailable."""
        if not 0 <= start < end:
            raise ValueError(f"an empty or negative range [{start}, {end}) of {key!r}")
        async with self._bounded(f"reading {key!r}", timeout):
            try:
                result = await obstore.get_async(self._store, key, options={"range": (start, end)})
            except FileNotFoundError:
                raise ObjectMissing(key, "is not in the store") from None
            except BaseError as error:
                await self._explain(key, end, error)
                raise
        pieces = result.stream(min_chunk_size=piece_bytes)
        got = 0
        while True:
            async with self._bounded(f"reading {key!r}", timeout):
                try:
                    piece = await anext(pieces)
                except StopAsyncIteration:
                    break
            got += len(piece)
            if got > end - start:
                raise ObjectMissing(key, f"gave more bytes than the range [{start}, {end}) asked for")
            yield bytes(piece)
        if got != end - start:
            raise ObjectMissing(key, f"ends before byte {end}: {got} of {end - start} bytes from byte {start}")

    async def list(self, prefix: str, *, timeout: float, limit: int = 10_000) -> list[ObjectInfo]:
        """The objects whose keys start with the directory `prefix` ('builds/<id>/'),
        at most `limit` of them (in no particular order)."""
        found: list[ObjectInfo] = []
        async with self._bounded(f"listing {prefix!r}", timeout):
            async for batch in obstore.list(self._store, prefix, chunk_size=1000):
                for meta in batch:
                    found.append(ObjectInfo(meta["path"], meta["size"], meta["last_modified"]))
                    if len(found) >= limit:
                        return found
        return found

    # -- errors ---------------------------------------------------------------------------

    async def _explain(self, key: str, end: int, error: BaseError) -> None:
        """A ranged read failed with a generic error: a range past the end of a
        truncated object (416, InvalidRange) is ObjectMissing, anything else
        is left to _bounded (ArchiveUnavailable). Stores word the first case
        differently, so the object's size is asked for (within the same
        timeout) rather than the message parsed."""
        if isinstance(error, PermissionDeniedError | UnauthenticatedError):
            return
        try:
            meta = await obstore.head_async(self._store, key)
        except FileNotFoundError:
            raise ObjectMissing(key, "is not in the store") from None
        except (BaseError, OSError):
            return
        if meta["size"] < end:
            raise ObjectMissing(key, f"is {meta['size']} bytes long, shorter than the index says ({end})") from None

    def _bounded(self, what: str, timeout: float) -> _Bounded:
        return _Bounded(self.where, what, timeout)


class _Bounded:
    """`async with`: the body within `timeout` seconds, and the store's own
    errors (network, HTTP 5xx, credentials, local I/O) as ArchiveUnavailable.
    ObjectMissing, ValueError and the caller's own exceptions pass."""

    def __init__(self, where: str, what: str, timeout: float) -> None:
        self.where, self.what = where, what
        self.timeout = timeout
        self._scope = asyncio.timeout(timeout)

    async def __aenter__(self) -> None:
        await self._scope.__aenter__()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> bool:
        try:
            await self._scope.__aexit__(kind, error, tb)
        except TimeoutError:
            raise ArchiveUnavailable(self.where, self.what, f"took longer than {self.timeout:g} s") from None
        if error is None or isinstance(error, ObjectMissing | FileNotFoundError):
            return False
        if isinstance(error, PermissionDeniedError | UnauthenticatedError | PermissionError):
            raise ArchiveUnavailable(
                self.where, self.what, "was refused by the store (its credentials)", _first_line(error)
            ) from error
        if isinstance(error, BaseError | OSError):
            raise ArchiveUnavailable(self.where, self.what, "failed", _first_line(error)) from error
        return False


class _OutOfTime(Exception):
    """A put's frames ran out of time (raised inside its frames, so that obstore aborts the upload)."""


async def _aiter(items: Iterable[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


# -- configuration ------------------------------------------------------------------------


def open_store(url: str, *, config: Mapping[str, Any] | None = None, allow_http: bool | None = None) -> ObjectStore:
    """The store ARCHIVE_URL names (as server.config.parse_archive_url accepts
    it): a local directory (created when missing), or s3://, gs://, az://
    with the standard credentials and settings of each cloud, which obstore
    reads from the environment (AWS_ACCESS_KEY_ID, AWS_REGION,
    AWS_ENDPOINT_URL, an instance or pod role, ...;
    GOOGLE_APPLICATION_CREDENTIALS or the metadata server; AZURE_STORAGE_*
    or a managed identity). `config` adds obstore settings of that cloud
    (S3Config, GCSConfig, AzureConfig) over the environment's. An endpoint
    over plain http (a local test server) needs `allow_http`, by default
    AWS_ALLOW_HTTP=true for s3:// (ALLOW_HTTP=true for gs:// and az://)."""
    value = parse_archive_url(url)
    if not value:
        raise ValueError("ARCHIVE_URL is empty: archiving is off, there is no store to open")
    scheme, sep, rest = value.partition("://")
    if not sep or scheme == "file":
        directory = Path(rest if sep else value).expanduser().resolve()
        directory.mkdir(parents=True, exist_ok=True)
        return ObjectStore(LocalStore(directory), str(directory))
    options = dict(_CLIENT_OPTIONS)
    if allow_http is None:
        flag = os.environ.get("AWS_ALLOW_HTTP" if scheme == "s3" else "ALLOW_HTTP", "")
        allow_http = flag.strip().lower() in ("1", "true", "yes", "on")
    if allow_http:
        options["allow_http"] = True
    try:
        store = from_url(value, config=dict(config or {}) or None, client_options=options,  # type: ignore[call-overload]
                         retry_config=_RETRY)
    except (BaseError, ValueError) as error:
        raise ValueError(f"ARCHIVE_URL={value!r} cannot be used: {_first_line(error)}") from None
    return ObjectStore(store, value)
