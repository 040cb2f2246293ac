"""The process's Prometheus metrics (docs/operations.md#metrics has the table).

Names: the per-RPC metrics are gRPC's own (proposal A66, "OpenTelemetry
metrics", in their Prometheus form: `grpc.server.call.duration` becomes
`grpc_server_call_duration_seconds`, attribute `grpc.method` label
`grpc_method`), plus a `transport` label (grpc or http) because the HTTP
port serves the same RPCs. A66 is what grpc-go, grpc-java and grpc-core
export, with fixed bucket boundaries, so dashboards and alerts written for
other gRPC services apply as they are; OpenTelemetry's RPC semantic
conventions were the alternative, but their metrics are still
"development" (renamed in 2025) and have no counter of calls started.
Everything else is this service's own, under `buildplatform_`.

Recording is cheap on the hot path: each RPC's labelled children are looked
up once per method and transport and cached (`method()`), each feed kind's
once (`feed`); the gauges that describe a state (pools, rings, calls in
flight, the notification queue) are set by `sample()`, which the health loop
calls every HEALTH_CHECK_SECONDS, never per call.

With WORKERS, every worker records into PROMETHEUS_MULTIPROC_DIR (set by
the supervisor before the worker imports prometheus_client) and the
supervisor serves the sum (server.telemetry.endpoint). Each gauge says how
workers combine (`multiprocess_mode`): a sum over live workers for what adds
up (connections, streams, bytes), the largest for the notification queue,
which every worker reads from the same database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# A66's bucket boundaries: latency in seconds, sizes in bytes.
LATENCY_BUCKETS = (
    0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008,
    0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4,
    0.5, 0.65, 0.8, 1, 2, 5, 10, 20, 50, 100,
)
SIZE_BUCKETS = (
    0, 1024, 2048, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864, 268435456,
    1073741824, 4294967296,
)
# Append-to-send: milliseconds when all is well, a heartbeat period (seconds)
# when notifications are lost, longer for a follower that cannot keep up.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

TRANSPORTS = ("grpc", "http")
FEED_KINDS = ("log", "event")
CALL_KINDS = ("unary", "stream")
POOLS = ("psycopg", "sqlalchemy")
ARCHIVE_FAILURES = ("error", "mismatch", "lost_claim", "build_deleted", "round")


@dataclass(frozen=True, slots=True)
class PoolStats:
    """One connection pool's state, as server.store.db reads it."""

    pool: str        # "psycopg" (the hot paths) or "sqlalchemy"
    in_use: int
    idle: int
    waiting: int     # calls waiting for one of its connections
    maximum: int


class MethodMetrics:
    """The labelled children of one RPC on one transport."""

    __slots__ = ("_durations", "_metrics", "_received", "_sent", "label", "open", "started", "transport")

    def __init__(self, metrics: Metrics, label: str, transport: str, stream: bool) -> None:
        self._metrics = metrics
        self.label = label
        self.transport = transport
        self.started = metrics.call_started.labels(label, transport)
        self.open = metrics.streams_open.labels(label, transport) if stream else None
        self._durations: dict[str, Histogram] = {}
        self._received: dict[str, Histogram] = {}
        self._sent: dict[str, Histogram] = {}

    def _children(self, code: str) -> None:
        m = self._metrics
        self._durations[code] = m.call_duration.labels(self.label, code, self.transport)
        self._received[code] = m.call_received.labels(self.label, code, self.transport)
        self._sent[code] = m.call_sent.labels(self.label, code, self.transport)

    def finished(self, code: str, seconds: float, received: int, sent: int | None) -> None:
        """A call ended with `code` after `seconds`, having received and sent
        these bytes of messages; `sent` None: its response is serialized
        after its status is known, and response_size() records it then."""
        duration = self._durations.get(code)
        if duration is None:
            self._children(code)
            duration = self._durations[code]
        duration.observe(seconds)
        self._received[code].observe(received)
        if sent is not None:
            self._sent[code].observe(sent)

    def response_size(self, code: str, size: int) -> None:
        """The bytes of a unary response serialized after finished()."""
        sent = self._sent.get(code)
        if sent is None:
            self._children(code)
            sent = self._sent[code]
        sent.observe(size)


class FeedMetrics:
    """The labelled children of one feed kind (log or event)."""

    __slots__ = ("appended", "batches", "bytes", "database_reads", "lag")

    def __init__(self, metrics: Metrics, kind: str) -> None:
        self.appended = metrics.feed_appended.labels(kind)
        self.batches = metrics.feed_batches.labels(kind)
        self.bytes = metrics.feed_bytes.labels(kind)
        self.lag = metrics.delivery_lag.labels(kind)
        self.database_reads = metrics.follower_database_reads.labels(kind)

    def append(self, entries: int, size: int) -> None:
        self.batches.inc()
        self.appended.inc(entries)
        self.bytes.inc(size)


class Metrics:
    """Every metric of the process, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        # `_created` series double the series count and do not exist in
        # multiprocess mode: leave them out in both modes alike.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        r = registry
        rpc = ["grpc_method", "transport"]
        rpc_status = ["grpc_method", "grpc_status", "transport"]
        self.call_started = Counter(
            "grpc_server_call_started", "RPCs started (A66), including those not finished yet.", rpc, registry=r)
        self.call_duration = Histogram(
            "grpc_server_call_duration_seconds",
            "Time from a call's arrival to its status (A66); the count is the calls finished.",
            rpc_status, buckets=LATENCY_BUCKETS, registry=r)
        self.call_received = Histogram(
            "grpc_server_call_rcvd_total_compressed_message_size_bytes",
            "Bytes of request messages per call (A66), as serialized (this server does not compress).",
            rpc_status, buckets=SIZE_BUCKETS, registry=r)
        self.call_sent = Histogram(
            "grpc_server_call_sent_total_compressed_message_size_bytes",
            "Bytes of response messages per call (A66), as serialized (this server does not compress).",
            rpc_status, buckets=SIZE_BUCKETS, registry=r)
        self.streams_open = Gauge(
            "buildplatform_streams_open", "Server streams open now (follows, watches).", rpc,
            multiprocess_mode="livesum", registry=r)
        self.calls_refused = Counter(
            "buildplatform_calls_refused", "Calls refused at once because the process was full "
            "(MAX_CONCURRENT_CALLS for unary calls, MAX_STREAMS for streams).", ["kind"], registry=r)
        self.calls_in_flight = Gauge(
            "buildplatform_calls_in_flight", "Calls admitted and not finished, by kind (sampled).", ["kind"],
            multiprocess_mode="livesum", registry=r)
        self.feed_appended = Counter(
            "buildplatform_feed_appended_entries", "Log lines (events) appended; a recognised retry appends none.",
            ["kind"], registry=r)
        self.feed_batches = Counter(
            "buildplatform_feed_append_batches", "Appends that wrote their batch.", ["kind"], registry=r)
        self.feed_bytes = Counter(
            "buildplatform_feed_appended_bytes", "Serialized bytes of the entries appended, as the writer sent them.",
            ["kind"], registry=r)
        self.delivery_lag = Histogram(
            "buildplatform_feed_delivery_lag_seconds",
            "From a line's create_time (set by the appending transaction) to the moment a following stream sends "
            "it, once per live message, for its oldest line.", ["kind"], buckets=LAG_BUCKETS, registry=r)
        self.follower_database_reads = Counter(
            "buildplatform_feed_follower_database_reads",
            "Reads a following stream made from PostgreSQL because its cursor was behind the ring.",
            ["kind"], registry=r)
        self.archive_chunk_reads = Counter(
            "buildplatform_archive_chunk_reads", "Archived chunks fetched (one ranged GET each) and decoded by "
            "readers of archived builds.", ["kind"], registry=r)
        self.archive_read_errors = Counter(
            "buildplatform_archive_read_errors", "Archived chunks a reader found missing from the object store "
            "or failing their checksum (each answered DATA_LOSS).", ["kind", "reason"], registry=r)
        self.logs_expired = Counter(
            "buildplatform_logs_expired", "Builds whose logs and events the janitor expired (their project's "
            "retention passed).", registry=r)
        self.archive_objects_deleted = Counter(
            "buildplatform_archive_objects_deleted", "Objects the janitor deleted from the archive (of expired "
            "and deleted builds).", registry=r)
        self.hot_partitions_dropped = Counter(
            "buildplatform_hot_partitions_dropped", "Windows of the hot log and event tables the janitor "
            "detached and dropped (every build in them archived, expired or deleted).", registry=r)
        self.ring_bytes = Gauge(
            "buildplatform_feed_ring_bytes", "Bytes of recent lines and events held in memory for followers "
            "(FEED_TOTAL_BYTES bounds it per process; sampled).", multiprocess_mode="livesum", registry=r)
        self.feeds_followed = Gauge(
            "buildplatform_feeds_followed", "Builds and kinds with followers and a ring (sampled).",
            multiprocess_mode="livesum", registry=r)
        self.pool_connections = Gauge(
            "buildplatform_db_pool_connections", "Pooled database connections, in use or idle (sampled).",
            ["pool", "state"], multiprocess_mode="livesum", registry=r)
        self.pool_waiting = Gauge(
            "buildplatform_db_pool_waiting", "Calls waiting for a pooled connection (sampled).", ["pool"],
            multiprocess_mode="livesum", registry=r)
        self.pool_max = Gauge(
            "buildplatform_db_pool_max_connections", "Connections a pool may open (DB_POOL_SIZE + "
            "DB_POOL_MAX_OVERFLOW).", ["pool"], multiprocess_mode="livesum", registry=r)
        self.pool_wait = Histogram(
            "buildplatform_db_pool_wait_seconds", "Time a unit of work waited for a pooled connection "
            "(connecting included when the pool grew for it).", ["pool"], buckets=LATENCY_BUCKETS, registry=r)
        self.listen_reconnects = Counter(
            "buildplatform_db_listen_reconnects", "Times the LISTEN connection was lost (or could not be made) "
            "and was made again.", registry=r)
        self.listen_connected = Gauge(
            "buildplatform_db_listen_connected", "Processes whose LISTEN connection is up (sampled).",
            multiprocess_mode="livesum", registry=r)
        self.notification_queue = Gauge(
            "buildplatform_db_notification_queue_usage", "pg_notification_queue_usage(): the fraction of "
            "PostgreSQL's NOTIFY queue in use (0 to 1), read by the health check.",
            multiprocess_mode="livemax", registry=r)
        self.archive_lag = Gauge(
            "buildplatform_archive_lag_seconds", "How long the oldest build due to be archived (finished more than "
            "ARCHIVE_AFTER_SECONDS ago, still hot) has waited past its due time; 0 when none waits (sampled by "
            "the archiver).", multiprocess_mode="livemax", registry=r)
        self.archive_builds = Counter(
            "buildplatform_archive_builds", "Builds whose logs and events this process archived.", registry=r)
        self.archive_objects = Counter(
            "buildplatform_archive_objects", "Objects this process wrote to the archive and indexed.", ["kind"],
            registry=r)
        self.archive_bytes = Counter(
            "buildplatform_archive_bytes", "Bytes archived: `raw` the chunks' uncompressed frames, `stored` the "
            "objects' compressed bytes.", ["kind", "form"], registry=r)
        self.archive_failures = Counter(
            "buildplatform_archive_failures", "Archiving attempts (or rounds) that failed, by reason: error (store "
            "or database), mismatch (hot rows unlike the counters), lost_claim, build_deleted, round (no claim "
            "could be made).", ["reason"], registry=r)

        self._methods: dict[str, dict[str, MethodMetrics]] = {transport: {} for transport in TRANSPORTS}
        self.feed = {kind: FeedMetrics(self, kind) for kind in FEED_KINDS}
        self.refused = {kind: self.calls_refused.labels(kind) for kind in CALL_KINDS}
        self.pool_waits = {pool: self.pool_wait.labels(pool) for pool in POOLS}
        self.listen_reconnects.inc(0)
        self.logs_expired.inc(0)
        self.archive_objects_deleted.inc(0)
        self.hot_partitions_dropped.inc(0)
        self.archive_builds.inc(0)
        for kind in FEED_KINDS:
            self.archive_objects.labels(kind).inc(0)
            for form in ("raw", "stored"):
                self.archive_bytes.labels(kind, form).inc(0)
        for reason in ARCHIVE_FAILURES:
            self.archive_failures.labels(reason).inc(0)

    def method(self, path: str, transport: str, stream: bool) -> MethodMetrics:
        """The children of RPC `path` (/buildplatform.v1.BuildService/GetBuild) on `transport`."""
        methods = self._methods[transport]
        found = methods.get(path)
        if found is None:
            found = methods[path] = MethodMetrics(self, path.lstrip("/"), transport, stream)
        return found

    def sample(
        self, *, unary: int, streams: int, pools: Iterable[PoolStats], ring_bytes: int, feeds: int,
        listening: bool,
    ) -> None:
        """Set the gauges that describe the process's state now."""
        self.calls_in_flight.labels("unary").set(unary)
        self.calls_in_flight.labels("stream").set(streams)
        for stats in pools:
            self.pool_connections.labels(stats.pool, "in_use").set(stats.in_use)
            self.pool_connections.labels(stats.pool, "idle").set(stats.idle)
            self.pool_waiting.labels(stats.pool).set(stats.waiting)
            self.pool_max.labels(stats.pool).set(stats.maximum)
        self.ring_bytes.set(ring_bytes)
        self.feeds_followed.set(feeds)
        self.listen_connected.set(1 if listening else 0)
