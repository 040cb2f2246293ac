"""`python -m server tokens create|list|revoke`: service tokens, for operators.

`create` prints the token on its last line (and only there: it is stored as
a hash and cannot be shown again). Every failure is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime

from server.config import Settings
from server.domain.access import SCOPES, parse_scopes
from server.domain.errors import DomainError
from server.store import credentials
from server.store.db import Database, DatabaseUnavailable


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tokens = commands.add_parser("tokens", help="create, list and revoke service tokens")
    actions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a token; it is printed on the last line, once")
    create.add_argument("name", help="a name that says who uses it, e.g. ci-deployer")
    create.add_argument(
        "--scopes", required=True, help=f"comma-separated, of {', '.join(SCOPES)} (e.g. read,write)"
    )
    actions.add_parser("list", help="names, scopes, creation and revocation times (never the tokens)")
    revoke = actions.add_parser("revoke", help="revoke a token by name; servers refuse it within seconds")
    revoke.add_argument("name")


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S%z") if moment else "-"


async def _run(args: argparse.Namespace, settings: Settings) -> list[str]:
    db = Database(settings.database_url, pool_size=1, max_overflow=0, timeout=settings.db_timeout_seconds)
    await db.open()
    try:
        async with db.connection() as conn:
            if args.action == "create":
                scopes = parse_scopes(args.scopes)
                token = await credentials.create_service_token(conn, args.name, scopes)
                return [f"created service token {args.name!r} with scopes {','.join(sorted(scopes))}; "
                        "it is shown only now:", token]
            if args.action == "revoke":
                revoked = await credentials.revoke_service_token(conn, args.name)
                return [f"revoked service token {revoked.name!r} at {_when(revoked.revoke_time)}"]
            rows = [("NAME", "SCOPES", "CREATED", "REVOKED", "LAST USED")]
            for token_row in await credentials.list_service_tokens(conn):
                rows.append((token_row.name, ",".join(token_row.scopes), _when(token_row.create_time),
                             _when(token_row.revoke_time), _when(token_row.last_used_time)))
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                    for row in rows]
    finally:
        await db.close()


def main(args: argparse.Namespace, settings: Settings) -> None:
    if args.action == "create":
        if not args.name.strip():
            raise SystemExit("tokens create: the name must not be empty")
        try:
            parse_scopes(args.scopes)
        except ValueError as error:
            raise SystemExit(f"tokens create --scopes: {error}") from None
    from server import migrate

    try:
        problem = migrate.schema_problem(settings.database_url)
    except Exception as error:  # whatever the driver raises for a database that is down, one line
        raise SystemExit(f"cannot reach the database: {str(error).strip().splitlines()[0]}") from None
    if problem:
        raise SystemExit(f"cannot manage tokens: {problem}")
    try:
        lines = asyncio.run(_run(args, settings))
    except (DomainError, DatabaseUnavailable) as error:
        raise SystemExit(f"tokens {args.action}: {error}") from None
    print("\n".join(lines), flush=True)
