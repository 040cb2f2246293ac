"""build_server(): the servicers, health, reflection and the interceptor on
the gRPC port, and the same services on the HTTP port (server.http);
App: start, health that follows the database, and shutdown of both.

With METRICS_ADDRESS set, one `Metrics` is given to everything that records
(the calls of both transports, the pools, the hub, the feeds), and the
health loop samples the process's state into it; a single process serves
the endpoint itself (a worker leaves that to its supervisor,
server.telemetry.endpoint)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc
import psycopg
from buildplatform.v1 import (
    app_spec_pb2,
    build_event_pb2,
    build_log_pb2,
    build_pb2,
    chat_session_pb2,
    project_pb2,
    user_pb2,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server.archive.janitor import Janitor
from server.archive.objects import ObjectStore, open_store
from server.auth import Authenticator
from server.auth.bootstrap import bootstrap_admin_token, page_token_secret
from server.config import Settings
from server.core import app_specs, builds, chat_sessions, feeds, projects, users
from server.core.deps import Deps
from server.core.pagination import PageTokens
from server.live.hub import Hub
from server.rpc import reflection as rpc_reflection
from server.rpc.interceptors import ServerInterceptor
from server.rpc.principals import Gate
from server.rpc.registry import add_service
from server.store import db as store_db
from server.store.db import Database, DatabaseRejected, DatabaseUnavailable
from server.telemetry import multiprocess_worker
from server.tls import CertificateFiles, TlsError
from server.transport.calls import Calls

if TYPE_CHECKING:
    from server.archive.job import Archiver
    from server.http.server import HttpServer
    from server.telemetry.endpoint import MetricsEndpoint
    from server.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

# Each service and the core module holding its RPCs. Service names come
# from the generated descriptors, never from literals.
SERVICES = [
    (user_pb2.DESCRIPTOR.services_by_name["UserService"], users),
    (project_pb2.DESCRIPTOR.services_by_name["ProjectService"], projects),
    (build_pb2.DESCRIPTOR.services_by_name["BuildService"], builds),
    (build_log_pb2.DESCRIPTOR.services_by_name["BuildLogService"], feeds),
    (build_event_pb2.DESCRIPTOR.services_by_name["BuildEventService"], feeds),
    (chat_session_pb2.DESCRIPTOR.services_by_name["ChatSessionService"], chat_sessions),
    (app_spec_pb2.DESCRIPTOR.services_by_name["AppSpecService"], app_specs),
]
SERVICE_NAMES = [service.full_name for service, _ in SERVICES]

SERVER_OPTIONS: list[tuple[str, Any]] = [
    # Detect clients that vanished (a follower whose laptop went to sleep)
    # and release their streams.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # An append of 5000 lines of up to 64 KiB can be large.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class App:
    server: grpc.aio.Server
    port: int
    db: Database
    hub: Hub
    health: health.aio.HealthServicer
    calls: Calls
    page_tokens: PageTokens
    settings: Settings
    health_interval: float = 2.0
    tls: str = "off"   # "off", "on" or "mutual" (client certificates required)
    http: HttpServer | None = None   # None when HTTP_ADDRESS is empty
    # False until the schema is known to be at the newest migration (a
    # server started while the database was down learns it later).
    ready: bool = True
    serving: bool | None = None
    problem: str = ""
    stopping: bool = False
    metrics: Metrics | None = None      # None: METRICS_ADDRESS is empty
    metrics_endpoint: MetricsEndpoint | None = None   # None: none, or the supervisor serves it
    archiver: Archiver | None = None    # None: archiving is off (ARCHIVE=false or ARCHIVE_URL=)
    janitor: Janitor | None = None   # None: JANITOR_SECONDS is 0
    _probe: psycopg.AsyncConnection[Any] | None = field(default=None, repr=False)
    _monitor: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self, *, ready: bool = True) -> None:
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.start()
        await self.db.open()
        try:
            self.ready = ready and await self._prepare()
        except BaseException:
            # A start that cannot go on (BootstrapError) closes what it
            # opened: the pool's connection attempts, left to asyncio.run's
            # final cancellation, could keep the process from exiting.
            await self.db.close()
            if self.metrics_endpoint is not None:
                self.metrics_endpoint.stop()
            raise
        self.hub.start()
        # Publish the health of every service before listening: a check that
        # arrives first must not find the service unknown (NOT_FOUND).
        await self._publish_health()
        self._sample()
        await self.server.start()
        if self.http is not None:
            await self.http.start()
        self._monitor = asyncio.create_task(self._watch_database())
        if self.archiver is not None:
            self.archiver.start()
        self._start_janitor()

    def _start_janitor(self) -> None:
        """The janitor works on the migrated schema only: it starts once ready."""
        if self.janitor is not None and self.ready and not self.janitor.started:
            self.janitor.start()

    def not_ready(self) -> str | None:
        """Why this server should get no traffic now (HTTP's /readyz), or
        None when it serves: what gRPC health says SERVING."""
        if self.stopping:
            return "shutting down"
        if not self.serving:
            return self.problem or "waiting for the database schema check"
        return None

    async def mark_ready(self) -> bool:
        """The schema is confirmed: prepare, and serve as soon as the
        database answers; False when the database went away meanwhile."""
        self.ready = await self._prepare()
        await self._publish_health()
        self._start_janitor()
        return self.ready

    async def _prepare(self) -> bool:
        """What must be read from (or made in) the database before serving:
        the page-token key, and the first admin token. False when the
        database cannot be reached yet; BootstrapError when waiting will not help."""
        try:
            self.page_tokens.use(await page_token_secret(self.db, self.settings.page_token_secret))
            await bootstrap_admin_token(self.db, self.settings.auth_bootstrap_token_file)
        except DatabaseUnavailable as error:
            self.problem = str(error)
            return False
        return True

    async def _database_answers(self) -> bool:
        """One round trip on the probe's own connection. Never a pooled one:
        a pool busy with calls is not a database that is down, and health
        must not pull every replica out of a load balancer under load."""
        timeout = min(self.db.timeout, max(self.health_interval, 1.0))
        try:
            if self._probe is None or self._probe.closed:
                self._probe = await store_db.connect(self.db.url, timeout=timeout, name="buildplatform-health")
            usage = await store_db.notification_queue_usage(self._probe, timeout=timeout)
        except (DatabaseUnavailable, DatabaseRejected) as error:
            self.problem = str(error)
            if self._probe is not None:
                await self._probe.close()
            self._probe = None
            return False
        if self.metrics is not None:
            self.metrics.notification_queue.set(usage)
        return True

    def _sample(self) -> None:
        """The gauges that describe this process now (every health check)."""
        if self.metrics is None:
            return
        self.metrics.sample(
            unary=self.calls.unary.count, streams=self.calls.streams.count, pools=self.db.pool_stats(),
            ring_bytes=self.hub.ring_total, feeds=len(self.hub.feeds), listening=self.hub.connected.is_set(),
        )

    async def _publish_health(self) -> None:
        """Publish SERVING or NOT_SERVING for every service when it changed."""
        ok = await self._database_answers() and self.ready
        if ok == self.serving:
            return
        back = ok and self.serving is False
        if back:
            # Back after an outage: the pools still hold dead connections.
            await self.db.recycle()
        self.serving = ok
        for name in ["", *SERVICE_NAMES]:
            await self.health.set(name, SERVING if ok else NOT_SERVING)
        if ok:
            # At start-up the `listening on` lines say so; after an outage it is news.
            log.log(logging.INFO if back else logging.DEBUG, "health: SERVING")
        elif not self.ready and not self.problem:
            log.warning("health: NOT_SERVING (waiting for the database schema check)")
        else:
            log.warning("health: NOT_SERVING (%s)", self.problem)

    async def _watch_database(self) -> None:
        """Health follows the database: NOT_SERVING while it is unreachable."""
        while True:
            await asyncio.sleep(self.health_interval)
            await self._publish_health()
            self._sample()

    async def stop(self, grace: float) -> None:
        self.stopping = True
        await self.health.enter_graceful_shutdown()
        if self.archiver is not None:
            # An attempt cut short commits nothing; the next one cleans up.
            await self.archiver.stop()
        # Streams that follow a build would hold the grace period open; they
        # end now with UNAVAILABLE, and their clients resume elsewhere.
        self.hub.begin_shutdown()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        # Stop accepting, drain, then stop: new calls of both transports are
        # answered UNAVAILABLE with retry advice from here on; running calls
        # get the grace period, and what is left then is answered
        # UNAVAILABLE too (Calls.drain). Only then do the servers stop: gRPC's
        # own stop would cancel (CANCELLED, never retried) the calls its core
        # had queued and not handed over yet.
        await self.calls.drain(grace)
        stopping = [asyncio.create_task(self.server.stop(5))]
        if self.http is not None:
            stopping.append(asyncio.create_task(self.http.stop()))
        await asyncio.gather(*stopping)
        if self.janitor is not None:
            await self.janitor.stop()
        await self.hub.close()
        await self.db.close()
        if self._probe is not None:
            await self._probe.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.stop()


def bound(address: str, setting: str, *, reuse_port: bool = False, shared: bool = True) -> socket.socket:
    """A socket bound to `address`, or SystemExit with one line that says
    why not and what to do. Asked before grpc binds too, because grpc's own
    failure is a multi-line log from its C core and a bare "Failed to bind"."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as error:
        raise SystemExit(f"cannot listen on {address}: {error.strerror}; fix {setting}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc does
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, int(port)))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise SystemExit(
                f"cannot listen on {address}: the port is in use (another server?); stop it, "
                f"or set {setting} to another port"
                + (" (REUSE_PORT=true shares a port on purpose)" if shared else "")
            ) from None
        if error.errno == errno.EADDRNOTAVAIL:
            raise SystemExit(f"cannot listen on {address}: {host} is not an address of this machine; fix {setting}") from None
        if error.errno == errno.EACCES:
            raise SystemExit(
                f"cannot listen on {address}: permission denied (ports below 1024 need privileges); fix {setting}"
            ) from None
        raise SystemExit(f"cannot listen on {address}: {error.strerror}; fix {setting}") from None
    except (socket.gaierror, ValueError):
        sock.close()
        raise SystemExit(f"cannot listen on {address}: {host!r} is not a local host name or address; fix {setting}") from None
    return sock


def build_server(settings: Settings, *, tracing: bool = False) -> App:
    """Everything a process serves, not started yet. `tracing`: the tracer
    provider is set (server.telemetry.tracing.start), so calls and
    statements make spans."""
    metrics = _metrics(settings)
    cursor_factory = None
    tracer = None
    if tracing:
        from server.telemetry.tracing import RpcTracer, TracedCursor

        cursor_factory, tracer = TracedCursor, RpcTracer()
    db = Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        timeout=settings.db_timeout_seconds,
        metrics=metrics,
        cursor_factory=cursor_factory,
    )
    # Readers of archived builds read it, and the janitor deletes from it, even
    # when ARCHIVE=false stops archiving more.
    archive = _archive_for_readers(settings)
    hub = Hub(
        db, settings.database_url, check_seconds=settings.health_check_seconds,
        heartbeat_seconds=settings.stream_heartbeat_seconds,
        ring_bytes=settings.feed_ring_bytes, total_bytes=settings.feed_total_bytes,
        notify_tick_seconds=settings.notify_tick_seconds, poll_seconds=settings.feed_poll_seconds,
        metrics=metrics,
        archive=archive,
    )
    # The key is loaded when the database first answers (App._prepare).
    page_tokens = PageTokens()
    deps = Deps(
        db=db,
        tokens=page_tokens,
        hub=hub,
        heartbeat_seconds=settings.stream_heartbeat_seconds,
        metrics=metrics,
    )
    calls = Calls(
        max_unary=settings.max_concurrent_calls, max_streams=settings.max_streams, metrics=metrics, tracer=tracer
    )
    certificates = _certificate_files(settings)
    options = [*SERVER_OPTIONS, ("grpc.so_reuseport", 1 if settings.reuse_port else 0)]
    gate = Gate(Authenticator.from_settings(settings, db), reflection_open=settings.reflection)
    interceptor = ServerInterceptor(
        calls, gate=gate, client_certificates=certificates is not None and certificates.mutual
    )
    server = grpc.aio.server(interceptors=[interceptor], options=options)
    for service, core in SERVICES:
        add_service(server, service, core, deps)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    rpc_reflection.enable(
        [*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    if not settings.reuse_port:
        bound(settings.grpc_address, "GRPC_ADDRESS").close()
    try:
        if certificates is None:
            port = server.add_insecure_port(settings.grpc_address)
        else:
            port = server.add_secure_port(settings.grpc_address, _credentials(certificates))
    except RuntimeError:
        port = 0
    if port == 0:
        raise SystemExit(f"cannot listen on {settings.grpc_address}; fix GRPC_ADDRESS")
    app = App(
        server=server, port=port, db=db, hub=hub, health=health_servicer, calls=calls,
        page_tokens=page_tokens, settings=settings,
        health_interval=settings.health_check_seconds,
        tls="off" if certificates is None else "mutual" if certificates.mutual else "on",
    )
    if settings.http_address:
        app.http = _http_server(settings, deps, calls, gate.authenticator, app)
    app.metrics = metrics
    app.archiver = _archiver(settings, db, archive, metrics, serving=lambda: bool(app.serving) and not app.stopping)
    if settings.janitor_seconds > 0:
        app.janitor = Janitor(
            database_url=settings.database_url, store=archive, default_days=settings.log_retention_days,
            interval=settings.janitor_seconds, window_seconds=settings.hot_partition_seconds,
            grace=timedelta(seconds=settings.hot_partition_grace_seconds), timeout=settings.db_timeout_seconds,
            garbage_age=timedelta(seconds=settings.archive_lease_seconds), metrics=metrics,
        )
    if metrics is not None and not multiprocess_worker():
        app.metrics_endpoint = metrics_endpoint(settings)
    return app


def _archive_for_readers(settings: Settings) -> ObjectStore | None:
    """The store readers of archived builds read (server.live.tiers): ARCHIVE_URL's,
    even when ARCHIVE=false stops archiving more; None when it is empty."""
    if not settings.archive_url:
        return None
    try:
        return open_store(settings.archive_url)
    except (ValueError, OSError) as error:
        raise SystemExit(f"cannot read the archive at ARCHIVE_URL={settings.archive_url!r}: {error}; "
                         "fix ARCHIVE_URL") from None


def _archiver(
    settings: Settings, db: Database, store: ObjectStore | None, metrics: Metrics | None, *,
    serving: Callable[[], bool],
) -> Archiver | None:
    """The archiver job of this process (server.archive.job), writing to
    `store` (the one the readers and the janitor use: one client, one
    connection pool per process), None when archiving is off (ARCHIVE=false
    or ARCHIVE_URL empty). ARCHIVE_TEST_PAUSE_AT is for tests only: it stops
    the job at a named step so a test can SIGKILL the process there."""
    if not settings.archive or store is None:
        return None
    import os

    from server.archive.job import Archiver

    try:
        return Archiver(
            db, store, after_seconds=settings.archive_after_seconds,
            interval_seconds=settings.archive_interval_seconds, lease_seconds=settings.archive_lease_seconds,
            cpu_share=settings.archive_cpu_share,
            metrics=metrics, pause_at=os.environ.get("ARCHIVE_TEST_PAUSE_AT", ""), serving=serving,
        )
    except ValueError as error:
        raise SystemExit(str(error)) from None


def _metrics(settings: Settings) -> Metrics | None:
    """The process's metrics when METRICS_ADDRESS is set (imported only then)."""
    if not settings.metrics_address:
        return None
    from server.telemetry.metrics import Metrics

    return Metrics()


def metrics_endpoint(settings: Settings, registry: Any = None) -> MetricsEndpoint:
    """METRICS_ADDRESS bound (or SystemExit with one line), not started yet;
    TLS when the other ports serve it."""
    from server.telemetry.endpoint import MetricsEndpoint

    sock = bound(settings.metrics_address, "METRICS_ADDRESS", shared=False)
    certificates = _certificate_files(settings)
    try:
        context = None if certificates is None else certificates.ssl_context()
    except TlsError as error:
        sock.close()
        raise SystemExit(f"cannot serve TLS: {error}") from None
    if registry is None:
        return MetricsEndpoint(sock, context=context)
    return MetricsEndpoint(sock, registry=registry, context=context)


def _http_server(settings: Settings, deps: Deps, calls: Calls, authenticator: Authenticator, app: App) -> HttpServer:
    """The same services on HTTP_ADDRESS, sharing the core, the
    authenticator and the calls' limits with the gRPC port. Imported only
    when HTTP is served (connectrpc and uvicorn add about 6 MB)."""
    from server.core.calls import endpoint
    from server.http.app import HttpApp
    from server.http.calls import CallInterceptor
    from server.http.log_download import LogDownload
    from server.http.registry import endpoints
    from server.http.server import HttpServer

    certificates = _certificate_files(settings)   # a watcher of the HTTP port's own
    try:
        context = None if certificates is None else certificates.ssl_context()
    except TlsError as error:
        raise SystemExit(f"cannot serve TLS: {error}") from None
    interceptor = CallInterceptor(calls, authenticator)
    read_text = build_log_pb2.DESCRIPTOR.services_by_name["BuildLogService"].methods_by_name["ReadBuildLogText"]
    handler = HttpApp(
        endpoints(SERVICES, deps), calls=calls, interceptor=interceptor,
        not_ready=app.not_ready, cors_origins=settings.http_cors_origins,
        log_download=LogDownload(deps, interceptor, endpoint(feeds, read_text)),
    )
    sock = bound(settings.http_address, "HTTP_ADDRESS", reuse_port=settings.reuse_port)
    return HttpServer(handler, sock, context=context, grace=settings.shutdown_grace_seconds + 5)


def _certificate_files(settings: Settings) -> CertificateFiles | None:
    if not settings.tls_cert_file:
        return None   # plaintext: Settings allowed it (loopback, or ALLOW_PLAINTEXT)
    return CertificateFiles(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file or None)


def _credentials(certificates: CertificateFiles) -> grpc.ServerCredentials:
    try:
        return certificates.credentials()
    except TlsError as error:
        raise SystemExit(f"cannot serve TLS: {error}") from None
