"""python -m server: migrate (optionally) and serve until SIGTERM or SIGINT.

Every way start-up can fail ends in one line on stderr that says what
happened and what to do, and a non-zero exit; never a traceback. A database
that is merely unreachable is waited for: the server listens, answers
health NOT_SERVING, logs what it waits for, and serves once the database
answers and its schema is at the newest migration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from dataclasses import replace

# This process forks only to exec another program (pg_ctl of the embedded
# PostgreSQL, `python -m server.migrate`, workers), never to run gRPC in the
# child, which is what gRPC's fork handlers are for. With them on, a fork while
# gRPC's threads run (the embedded PostgreSQL stopped at shutdown) makes the C
# core print a line of its own (fork_posix.cc, not JSON) into the log. Read
# when gRPC initialises, so set before it is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from server import logs, telemetry, workers
from server.config import Settings, help_text

# Lifecycle lines (the port listened on, shutdown) are printed whatever LOG_LEVEL says.
log = logging.getLogger("server.lifecycle")

RETRY_SECONDS = 2.0   # between attempts to reach a database that is down
SCHEMA_CHECK_SECONDS = 60.0  # a schema check that takes longer counts as a database not answering


class StartupError(Exception):
    """Start-up cannot go on; the message is the one line to print."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve the buildplatform gRPC API.",
        epilog=help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--migrate", action="store_true", help="apply database migrations before serving")
    parser.add_argument("--migrate-only", action="store_true", help="apply database migrations and exit")
    from server.auth import cli

    cli.add_parser(parser.add_subparsers(dest="command", metavar="COMMAND", title="commands"))
    return parser.parse_args()


async def schema(action: str, database_url: str) -> str:
    """Run `python -m server.migrate ACTION` in a child process (this one
    never imports Alembic). Return "" when the schema is at the newest
    migration, or why the database cannot be reached (worth waiting for);
    raise StartupError when waiting will not help."""
    from server import migrate

    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.migrate", action,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        # A check is one query; an upgrade may rewrite big tables and takes as long as it takes.
        async with asyncio.timeout(SCHEMA_CHECK_SECONDS if action == "check" else None):
            out, _ = await child.communicate()
    except TimeoutError:
        child.kill()
        await child.wait()
        return f"the database did not answer the schema check within {SCHEMA_CHECK_SECONDS:.0f}s"
    except BaseException:
        # Cancelled (a signal while waiting for the database): the child goes
        # with us, instead of writing its answer to a pipe nobody reads.
        if child.returncode is None:
            child.kill()
            await asyncio.shield(child.wait())
        raise
    said = out.decode().strip().splitlines()[-1] if out.strip() else ""
    if child.returncode == 0:
        return ""
    if child.returncode == migrate.DATABASE_UNREACHABLE:
        return said
    if child.returncode == migrate.SCHEMA_NOT_AT_HEAD:
        raise StartupError(f"refusing to start: {said}")
    if child.returncode == migrate.DATABASE_REJECTED:
        raise StartupError(f"cannot start: {said}")
    raise StartupError(f"`python -m server.migrate {action}` failed with exit code {child.returncode}: {said}")


async def serve(settings: Settings, *, action: str) -> int:
    """Serve until a signal; return the exit code."""
    from server.app import build_server

    # Handlers first: "listening on" is the readiness signal, and a SIGTERM
    # sent right after it must already mean a graceful stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    checking = asyncio.create_task(schema(action, settings.database_url))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait((checking, stopping), return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not checking.done():   # a signal while the database did not answer yet
        checking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checking
        log.info("stopped before serving: the signal came while the database was being checked")
        return 0
    unreachable = checking.result()
    if unreachable:
        log.warning("waiting for the database: %s; retrying every %.0fs", unreachable, RETRY_SECONDS)
    from server.auth.bootstrap import BootstrapError

    provider = None
    if telemetry.tracing_wanted(os.environ):
        from importlib.metadata import version

        from server.telemetry import tracing

        provider = tracing.start(os.environ, version=version("buildplatform-server"))
    app = build_server(settings, tracing=provider is not None)
    try:
        await app.start(ready=not unreachable)
    except BootstrapError as error:
        raise StartupError(str(error)) from None
    if not unreachable and not app.ready:   # reached for the schema check, gone since
        unreachable = app.problem
    # Everything made at start-up lives as long as the process: keep it out
    # of the garbage collector's passes, which otherwise walk it again and
    # again while streams allocate (gc.freeze, as large Python servers do).
    gc.collect()
    gc.freeze()
    if app.metrics_endpoint is not None:
        metrics_host = settings.metrics_address.rsplit(":", 1)[0]
        log.info("serving metrics on %s:%d (/metrics)", metrics_host, app.metrics_endpoint.port,
                 extra={"port": app.metrics_endpoint.port, "tls": app.tls, "metrics": "prometheus"})
    _log_tracing(provider is not None)
    host = settings.grpc_address.rsplit(":", 1)[0]
    log.info("listening on %s:%d", host, app.port, extra={"port": app.port, "tls": app.tls})
    if app.http is not None:
        # After the gRPC line, which tools read as "ready" (the first `listening on`).
        http_host = settings.http_address.rsplit(":", 1)[0]
        log.info("listening on %s:%d for HTTP (Connect, gRPC-Web, JSON)", http_host, app.http.port,
                 extra={"port": app.http.port, "tls": app.tls, "transport": "http"})
        from server import web_assets

        not_built = web_assets.missing()
        if not_built:  # gRPC and the HTTP API serve all the same
            log.warning("%s", not_built)
        else:
            log.info("build log pages: http://%s:%d/builds/<build id>#token=<token> (docs/log-page.md)",
                     http_host, app.http.port)
    failure: list[str] = []

    async def wait_for_database() -> None:
        said = unreachable
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            try:
                now = await schema(action, settings.database_url)
                ready = not now and await app.mark_ready()
            except (StartupError, BootstrapError) as error:
                failure.append(str(error))
                stop.set()
                return
            if ready:
                log.info("the database answers and its schema is at the newest migration")
                return
            now = now or app.problem
            if now != said:
                log.warning("waiting for the database: %s", now)
                said = now

    waiting = asyncio.create_task(wait_for_database()) if unreachable else None
    await stop.wait()
    if waiting is not None:
        waiting.cancel()
    if failure:
        log.error("%s", failure[0])
    log.info("shutting down: finishing running calls for up to %.0fs", settings.shutdown_grace_seconds)
    await app.stop(settings.shutdown_grace_seconds)
    if provider is not None:
        await asyncio.to_thread(provider.shutdown)   # export the spans still buffered
    log.info("stopped")
    return 1 if failure else 0


def _log_tracing(on: bool) -> None:
    """Whether spans are exported, and (said, not assumed) whether the
    OpenTelemetry SDK is in this process at all: it must not be when off."""
    loaded = "opentelemetry.sdk" in sys.modules
    if on:
        from server.telemetry import tracing

        log.info("tracing is on: spans go to %s", tracing.exporting_to(os.environ),
                 extra={"tracing": "on", "otel_sdk_loaded": loaded})
    else:
        # Said at INFO only to whoever set an OTEL_* variable; a plain start keeps to what a person needs.
        asked = any(name.startswith("OTEL_") for name in os.environ)
        log.log(logging.INFO if asked else logging.DEBUG,
                "tracing is off (set OTEL_EXPORTER_OTLP_ENDPOINT to turn it on); OpenTelemetry SDK loaded: %s",
                "yes" if loaded else "no", extra={"tracing": "off", "otel_sdk_loaded": loaded})


def supervise(settings: Settings, action: str) -> int:
    """WORKERS > 1: migrate once, then run and supervise the workers (server.workers)."""
    if action == "upgrade":
        while unreachable := asyncio.run(schema("upgrade", settings.database_url)):
            log.warning("waiting for the database to migrate it: %s; retrying every %.0fs", unreachable, RETRY_SECONDS)
            time.sleep(RETRY_SECONDS)
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REUSE_PORT": "true",
        "WORKERS": "1",
    }
    from server.app import bound, metrics_endpoint

    for name, address in (("GRPC_ADDRESS", settings.grpc_address), ("HTTP_ADDRESS", settings.http_address)):
        if address:
            env[name] = address = workers.fixed_port(address)
            if not settings.reuse_port:
                bound(address, name).close()   # in use: one line, before any worker starts
    if not settings.metrics_address:
        return workers.Supervisor(workers.count(settings.workers), env, settings.shutdown_grace_seconds).run()
    # The workers record into a directory of their own; this process serves
    # what they all recorded (server.telemetry.endpoint).
    from server.telemetry.endpoint import Workers

    recorded = Workers()
    env[telemetry.MULTIPROC_DIR] = recorded.directory
    try:
        endpoint = metrics_endpoint(settings, recorded.registry).start()
        host = settings.metrics_address.rsplit(":", 1)[0]
        log.info("serving metrics on %s:%d (/metrics) for every worker", host, endpoint.port,
                 extra={"port": endpoint.port, "metrics": "prometheus", "multiprocess_dir": recorded.directory})
        try:
            return workers.Supervisor(
                workers.count(settings.workers), env, settings.shutdown_grace_seconds, exited=recorded.worker_exited
            ).run()
        finally:
            endpoint.stop()
    finally:
        recorded.close()


def main() -> None:
    args = parse_args()
    settings = Settings.from_env()
    problem = telemetry.tracing_problem(os.environ)
    if problem:
        raise SystemExit(f"invalid setting: {problem}")
    # An operator command prints its answer, not the server's log lines.
    logs.configure(settings.log_level if args.command is None else "WARNING")
    embedded = None
    if not settings.database_url:
        from server import embedded as embedded_pg

        try:
            embedded, url = embedded_pg.start(settings.embedded_pg_dir)
        except Exception as error:  # whatever the package raises, one line
            raise SystemExit(
                f"cannot start the embedded PostgreSQL in {settings.embedded_pg_dir}: {error}; "
                "set DATABASE_URL to use another server"
            ) from None
        settings = replace(settings, database_url=url)
        os.environ["DATABASE_URL"] = url
        data_dir = os.path.abspath(settings.embedded_pg_dir)
        log.info("DATABASE_URL is not set: using the embedded PostgreSQL, data directory %s", data_dir,
                 extra={"database_url": url, "data_dir": data_dir})
    action = "upgrade" if args.migrate or args.migrate_only else "check"
    try:
        if args.command is None and not args.migrate_only and workers.count(settings.workers) > 1:
            code = supervise(settings, action)
            if code:
                raise SystemExit(code)
            return
        if args.command == "tokens":
            from server.auth import cli

            cli.main(args, settings)
            return
        if args.migrate_only:
            unreachable = asyncio.run(schema(action, settings.database_url))
            if unreachable:
                raise StartupError(f"cannot migrate: {unreachable}; start the database or fix DATABASE_URL")
            log.info("database schema is at the newest migration")
            return
        code = asyncio.run(serve(settings, action=action))
    except StartupError as error:
        raise SystemExit(str(error)) from None
    finally:
        if embedded is not None:
            embedded.cleanup()
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
