"""python -m server: migrate (optionally) and serve until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
from dataclasses import replace

from server import logs
from server.config import Settings, help_text

# Lifecycle lines (the port listened on, shutdown) are printed whatever LOG_LEVEL says.
log = logging.getLogger("server.lifecycle")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve the buildplatform gRPC API.",
        epilog=help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--migrate", action="store_true", help="apply database migrations before serving")
    parser.add_argument("--migrate-only", action="store_true", help="apply database migrations and exit")
    return parser.parse_args()


async def serve(settings: Settings) -> None:
    from server.app import build_server

    # Handlers first: "listening on" is the readiness signal, and a SIGTERM
    # sent right after it must already mean a graceful stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = build_server(settings)
    await app.start()
    host = settings.grpc_address.rsplit(":", 1)[0]
    log.info("listening on %s:%d", host, app.port, extra={"port": app.port})
    await stop.wait()
    log.info("shutting down: finishing running calls for up to %.0fs", settings.shutdown_grace_seconds)
    await app.stop(settings.shutdown_grace_seconds)
    log.info("stopped")


def _migrations(action: str, database_url: str) -> str:
    """Run server.migrate in a child process (this one never imports Alembic);
    return what is wrong with the schema, or "" when it is at head."""
    result = subprocess.run(
        [sys.executable, "-m", "server.migrate", action],
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode == 0:
        return ""
    if action == "check" and result.returncode == 3:  # server.migrate.SCHEMA_NOT_AT_HEAD
        return result.stdout.strip()
    raise SystemExit(f"`python -m server.migrate {action}` failed with exit code {result.returncode}")


def main() -> None:
    args = parse_args()
    settings = Settings.from_env()
    logs.configure(settings.log_level)
    embedded = None
    if not settings.database_url:
        from server import embedded as embedded_pg

        embedded, url = embedded_pg.start(settings.embedded_pg_dir)
        settings = replace(settings, database_url=url)
        os.environ["DATABASE_URL"] = url
        log.info("DATABASE_URL is not set: using the embedded PostgreSQL", extra={"database_url": url})
    if args.migrate or args.migrate_only:
        _migrations("upgrade", settings.database_url)
        log.info("database schema is at the newest migration")
        if args.migrate_only:
            return
    problem = _migrations("check", settings.database_url)
    if problem:
        raise SystemExit(f"refusing to start: {problem}")
    try:
        asyncio.run(serve(settings))
    finally:
        if embedded is not None:
            embedded.cleanup()


if __name__ == "__main__":
    main()
