"""OpenTelemetry traces: a span per RPC and a child span per database
statement, exported over OTLP/HTTP (protobuf) in batches.

Imported only when the standard variables turn tracing on
(server.telemetry.tracing_wanted); the SDK reads the rest of them itself:
OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT, OTEL_TRACES_SAMPLER
and OTEL_TRACES_SAMPLER_ARG (default: parentbased_always_on),
OTEL_SERVICE_NAME (default here: buildplatform), OTEL_RESOURCE_ATTRIBUTES,
OTEL_BSP_* (the batch processor), OTEL_PROPAGATORS (default: W3C trace
context and baggage).

- RPC spans (`RpcTracer.start`): kind SERVER, named `service/method`, with
  the caller's trace as parent when its `traceparent` (gRPC metadata or HTTP
  header) names one, and the RPC semantic conventions' attributes
  (rpc.system grpc or connect_rpc, rpc.service, rpc.method,
  rpc.grpc.status_code) plus `buildplatform.transport`. The span is the
  current one while the call runs, so every statement it causes is its
  child. Health checks and reflection get none (a load balancer's probes
  would drown the traces).
- A server stream's span covers its start and catch-up only: it ends when
  the stream has caught up (server.telemetry.stream_caught_up), not when the
  stream ends hours later; what comes after (live lines) is measured by the
  delivery-lag histogram, and the stream's end by its access log line and
  metrics, which carry the same trace id.
- Statement spans (`TracedCursor`): kind CLIENT, named by the statement's
  operation (SELECT, WITH, UPDATE, COPY, ...), with db.system.name,
  db.namespace, db.operation.name and db.query.text (the SQL: parameters
  are passed apart from it, so no value a caller sent is in a span). One
  small hook serves both pools: it is the cursor class of every pooled
  connection, and SQLAlchemy's psycopg dialect runs its statements through
  the same psycopg cursors. A statement with no recording span around it
  (a feed's shared read, the health probe) makes no span.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from google.rpc import code_pb2
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from server.telemetry import end_span_when_caught_up

# gRPC codes that mark a server span as failed (the RPC semantic conventions:
# the others are the caller's doing, not the server's).
SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})
UNTRACED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
SYSTEMS = {"grpc": "grpc", "http": "connect_rpc"}

_tracer = trace.get_tracer("server")


def start(environ: Mapping[str, str], *, version: str) -> TracerProvider:
    """The process's tracer provider, exporting as the OTEL_* variables say."""
    attributes: dict[str, Any] = {"service.version": version}
    named = "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if not environ.get("OTEL_SERVICE_NAME") and not named:
        attributes["service.name"] = "buildplatform"
    worker = environ.get("WORKER")
    if worker:
        attributes["buildplatform.worker"] = int(worker)
    provider = TracerProvider(resource=Resource.create(attributes))
    exporters = [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    for name in exporters:
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def exporting_to(environ: Mapping[str, str]) -> str:
    """Where the spans go, for the start-up line."""
    if "console" in environ.get("OTEL_TRACES_EXPORTER", ""):
        return "stdout"
    specific = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if specific:
        return specific
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
    return base.rstrip("/") + "/v1/traces"


class RpcSpan:
    """The span of one call, current while the call runs."""

    __slots__ = ("_outer", "_span", "trace_id", "transport")

    def __init__(self, span: trace.Span, outer: context.Context, transport: str) -> None:
        self._span: trace.Span | None = span
        self._outer = outer
        self.transport = transport
        self.trace_id = format(span.get_span_context().trace_id, "032x")

    def end(self, code: str, connect_code: str | None = None) -> None:
        """End the span with the call's status (a stream's span may have ended already)."""
        span = self._span
        if span is None:
            return
        self._span = None
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", code_pb2.Code.Value(code))
            if connect_code is not None:
                span.set_attribute("rpc.connect_rpc.error_code", connect_code)
            if code in SERVER_ERRORS:
                span.set_status(Status(StatusCode.ERROR, code))
        span.end()
        self._leave()

    def caught_up(self) -> None:
        span = self._span
        if span is None:
            return
        self._span = None
        span.set_attribute("buildplatform.stream.caught_up", True)
        span.end()
        self._leave()

    def _leave(self) -> None:
        # The context the call started in becomes current again, so later
        # statements of a stream are not children of an ended span. (Each call
        # runs in a task of its own, in both transports, so nothing else sees
        # this context; setting it back beats a token's reset, which fails
        # when a generator is closed from another task.)
        context.attach(self._outer)


class RpcTracer:
    def start(self, path: str, transport: str, carrier: Mapping[str, str], *, stream: bool) -> RpcSpan | None:
        """The span of the call to `path` (/buildplatform.v1.BuildService/GetBuild),
        current from now on; None for calls that are not traced."""
        if path.startswith(UNTRACED):
            return None
        service, _, method = path[1:].rpartition("/")
        outer = context.get_current()
        parent = propagate.extract(carrier)
        span = _tracer.start_span(
            path[1:], context=parent, kind=SpanKind.SERVER,
            attributes={"rpc.system": SYSTEMS[transport], "rpc.service": service, "rpc.method": method,
                        "buildplatform.transport": transport},
        )
        context.attach(trace.set_span_in_context(span, parent))
        rpc = RpcSpan(span, outer, transport)
        if stream:
            end_span_when_caught_up(rpc.caught_up)
        return rpc


def _statement(query: Any, cursor: psycopg.AsyncCursor[Any]) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode(errors="replace")
    return str(query.as_string(cursor))


def _attributes(cursor: psycopg.AsyncCursor[Any], text: str) -> tuple[str, dict[str, Any]]:
    operation = text.lstrip().split(None, 1)[0].upper() if text.strip() else "statement"
    return operation, {
        "db.system.name": "postgresql",
        "db.namespace": cursor.connection.info.dbname,
        "db.operation.name": operation,
        "db.query.text": text,
    }


class TracedCursor(psycopg.AsyncCursor[Any]):
    """A psycopg cursor whose statements are spans (children of the current one)."""

    async def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None,
                      binary: bool | None = None) -> Any:
        if not trace.get_current_span().is_recording():
            return await super().execute(query, params, prepare=prepare, binary=binary)
        name, attributes = _attributes(self, _statement(query, self))
        with _tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
            return await super().execute(query, params, prepare=prepare, binary=binary)

    @asynccontextmanager
    async def copy(self, statement: Any, params: Any = None, *, writer: Any = None) -> AsyncIterator[Any]:
        if not trace.get_current_span().is_recording():
            async with super().copy(statement, params, writer=writer) as copy:
                yield copy
            return
        name, attributes = _attributes(self, _statement(statement, self))
        with _tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
            async with super().copy(statement, params, writer=writer) as copy:
                yield copy


def shutdown(provider: TracerProvider) -> None:
    """Export what is still buffered (at most a few seconds)."""
    provider.shutdown()

