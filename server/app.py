"""build_server(): the servicers, health, reflection and the interceptor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc
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

from server.config import DEV_PAGE_TOKEN_SECRET, Settings
from server.rpc import reflection as rpc_reflection
from server.rpc.builds import BuildService
from server.rpc.deps import Deps
from server.rpc.interceptors import ServerInterceptor
from server.rpc.pagination import PageTokens
from server.rpc.registry import add_servicer
from server.rpc.resources import AppSpecService, ChatSessionService, ProjectService, UserService
from server.rpc.streams import BuildEventService, BuildLogService
from server.store.db import Database
from server.store.notify import Hub

log = logging.getLogger(__name__)

# Service names come from the generated descriptors, never from literals.
SERVICES = [
    (user_pb2.DESCRIPTOR.services_by_name["UserService"], UserService),
    (project_pb2.DESCRIPTOR.services_by_name["ProjectService"], ProjectService),
    (build_pb2.DESCRIPTOR.services_by_name["BuildService"], BuildService),
    (build_log_pb2.DESCRIPTOR.services_by_name["BuildLogService"], BuildLogService),
    (build_event_pb2.DESCRIPTOR.services_by_name["BuildEventService"], BuildEventService),
    (chat_session_pb2.DESCRIPTOR.services_by_name["ChatSessionService"], ChatSessionService),
    (app_spec_pb2.DESCRIPTOR.services_by_name["AppSpecService"], AppSpecService),
]
SERVICE_NAMES = [service.full_name for service, _ in SERVICES]

SERVER_OPTIONS = [
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
    # Several processes may serve one port (see docs/operations.md).
    ("grpc.so_reuseport", 1),
]


@dataclass
class App:
    server: grpc.aio.Server
    port: int
    db: Database
    hub: Hub
    health: health.aio.HealthServicer
    health_interval: float = 2.0
    _monitor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.db.open()
        await self.hub.start()
        # Publish the health of every service before listening: a check that
        # arrives first must not find the service unknown (NOT_FOUND).
        serving = await self._publish_health(None)
        await self.server.start()
        self._monitor = asyncio.create_task(self._watch_database(serving))

    async def _publish_health(self, serving: bool | None) -> bool:
        """Ping the database once; publish SERVING or NOT_SERVING when it changed."""
        try:
            await asyncio.wait_for(self.db.ping(), timeout=max(self.health_interval, 1.0))
            ok = True
        except Exception:  # any failure means not serving
            ok = False
        if ok != serving:
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ["", *SERVICE_NAMES]:
                await self.health.set(name, status)
            log.log(logging.INFO if ok else logging.WARNING, "health: %s", "SERVING" if ok else "NOT_SERVING (database unreachable)")
        return ok

    async def _watch_database(self, serving: bool) -> None:
        """Health follows the database: NOT_SERVING while it is unreachable."""
        while True:
            await asyncio.sleep(self.health_interval)
            serving = await self._publish_health(serving)

    async def stop(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        # Streams that follow a build would hold the grace period open; they
        # end now with UNAVAILABLE, and their clients resume elsewhere.
        self.hub.begin_shutdown()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await self.server.stop(grace)
        await self.hub.close()
        await self.db.close()


def build_server(settings: Settings) -> App:
    if not settings.page_token_secret:
        log.warning("PAGE_TOKEN_SECRET is not set: using the development key (set it in production)")
    db = Database(settings.database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_pool_max_overflow)
    hub = Hub(db, settings.database_url, ring_bytes=settings.feed_ring_bytes, total_bytes=settings.feed_total_bytes)
    deps = Deps(
        db=db,
        tokens=PageTokens(settings.page_token_secret or DEV_PAGE_TOKEN_SECRET),
        hub=hub,
        heartbeat_seconds=settings.stream_heartbeat_seconds,
    )
    server = grpc.aio.server(interceptors=[ServerInterceptor()], options=SERVER_OPTIONS)
    for service, servicer in SERVICES:
        add_servicer(server, service, servicer(deps))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    rpc_reflection.enable(
        [*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    port = server.add_insecure_port(settings.grpc_address)
    if port == 0:
        raise SystemExit(f"cannot listen on {settings.grpc_address}")
    return App(
        server=server, port=port, db=db, hub=hub, health=health_servicer,
        health_interval=settings.health_check_seconds,
    )
