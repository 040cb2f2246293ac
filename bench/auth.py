"""The cost of authenticate() per call: cached and uncached (timeit).

    python -m bench.auth          (DATABASE_URL, or an embedded PostgreSQL in .data/bench-auth)

Prints microseconds per call, the harness's own cost first (each call runs
an event-loop turn), for: a cached credential (a SHA-256 and a dict
lookup), an uncached RS256 session JWT (signature and claims, no database),
an uncached user principal (the JWT plus the User lookup) and an uncached
service token (one indexed SELECT). Issue 8 asks GetBuild to keep 0.8 of
the bare handler with authentication on: the cached figure is what a call
pays once its credential has been seen within AUTH cache's 10 s.
"""

from __future__ import annotations

import asyncio
import os
import timeit
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from server import migrate
from server.auth import Authenticator
from server.auth.cache import CredentialCache
from server.auth.sessions import PemKey, SessionVerifier
from server.store import credentials
from server.store.db import Database
from tests.auth_support import ISSUER, SigningKey, insert_user


def _per_call(loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[Any]], number: int) -> float:
    timer = timeit.Timer(lambda: loop.run_until_complete(call()))
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def main() -> None:
    url = os.environ.get("DATABASE_URL", "")
    embedded = None
    if not url:
        from server import embedded as embedded_pg

        embedded, url = embedded_pg.start(".data/bench-auth")
    migrate.upgrade(url)
    key = SigningKey.rsa()
    clerk_id = f"bench_{uuid.uuid4().hex[:8]}"
    insert_user(url, clerk_id)
    loop = asyncio.new_event_loop()
    db = Database(url, pool_size=2, max_overflow=0)
    loop.run_until_complete(db.open())
    try:
        service = loop.run_until_complete(_service_token(db))
        verifier = SessionVerifier(PemKey(key.public_pem()), issuer=ISSUER)
        cached = Authenticator(db, sessions=verifier)
        uncached = Authenticator(db, sessions=verifier, cache=CredentialCache(seconds=0))
        header = f"Bearer {key.sign(clerk_id)}"
        loop.run_until_complete(cached.authenticate(header))
        token = header.split()[1]
        async def nothing() -> None:
            return None

        figures = {
            "the harness alone (an empty coroutine)": _per_call(loop, nothing, 20_000),
            "cached credential (any kind)": _per_call(loop, lambda: cached.authenticate(header), 20_000),
            "uncached RS256 JWT, verification only": _per_call(loop, lambda: verifier.verify(token), 500),
            "uncached user (JWT + User lookup)": _per_call(loop, lambda: uncached.authenticate(header), 300),
            "uncached service token (one SELECT)": _per_call(
                loop, lambda: uncached.authenticate(f"Bearer {service}"), 300
            ),
        }
    finally:
        loop.run_until_complete(db.close())
        loop.close()
        if embedded is not None:
            embedded.cleanup()
    for what, micros in figures.items():
        print(f"{what:<40} {micros:10.1f} us per call")


async def _service_token(db: Database) -> str:
    async with db.connection() as conn:
        return await credentials.create_service_token(conn, f"bench-{uuid.uuid4().hex[:8]}", {"read"})


if __name__ == "__main__":
    main()
