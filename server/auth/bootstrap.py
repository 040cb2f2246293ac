"""What a server does once the database first answers, before it serves:
the page-token key, and the first admin token when no service token exists."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from server.store import credentials
from server.store.db import Database

log = logging.getLogger(__name__)


class BootstrapError(Exception):
    """The admin token could not be written; the message is one line."""


def write_private(path: Path, text: str) -> None:
    """`text` in `path`, readable by its owner only (0600), replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)   # whatever the umask
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(partial, path)


async def bootstrap_admin_token(db: Database, path: str) -> bool:
    """Create an admin token and write it to `path` when no service token
    exists; whether this process did. The token is never logged."""
    async with db.connection() as conn, conn.transaction():
        token = await credentials.create_bootstrap_token(conn)
        if token is None:
            if os.path.isfile(path):   # said on every start: it is what a person looks for
                log.info("the admin token is in %s (made by the first start; `python -m server tokens list` "
                         "shows every token)", os.path.abspath(path), extra={"admin_token_file": os.path.abspath(path)})
            return False
        try:
            write_private(Path(path), token + "\n")
        except OSError as error:
            # The transaction rolls back: the next start tries again.
            raise BootstrapError(
                f"cannot write the first admin token to {path} ({error.strerror}): "
                "fix AUTH_BOOTSTRAP_TOKEN_FILE or the directory's permissions"
            ) from None
    log.warning(
        "no service token existed: created the admin token %r and wrote it to %s (readable by its owner only); "
        "use it, create others with `python -m server tokens create`, and revoke it when done",
        credentials.BOOTSTRAP_NAME, os.path.abspath(path),
    )
    return True


async def page_token_secret(db: Database, configured: str) -> str:
    """PAGE_TOKEN_SECRET, or the random key kept in the database for it."""
    if configured:
        return configured
    async with db.connection() as conn:
        return await credentials.shared_key(conn, credentials.PAGE_TOKEN_KEY)
