"""Metrics and traces: what a process tells its operators besides its log.

- `server.telemetry.metrics`: the Prometheus metrics (prometheus-client),
  recorded when METRICS_ADDRESS is set; `server.telemetry.endpoint` serves
  them (the process itself, or with WORKERS the supervisor, which reads
  every worker's through prometheus-client's multiprocess mode);
- `server.telemetry.tracing`: OpenTelemetry spans per RPC and per database
  statement, exported over OTLP/HTTP when the standard OTEL_* variables ask
  for it.

Neither module is imported when its feature is off: prometheus-client adds
about 2 MB to a process, the OpenTelemetry SDK and its exporter about 4.5 MB
(measured here). This module holds what must work without them: whether
tracing is wanted, and the hook a stream calls once it has caught up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextvars import ContextVar

# Set by the WORKERS supervisor for its workers (server.telemetry.endpoint).
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

# OTEL_TRACES_EXPORTER values this server can honour.
EXPORTERS = ("otlp", "console", "none")


def multiprocess_worker() -> bool:
    """Whether this process is a worker whose metrics its supervisor serves:
    it records into PROMETHEUS_MULTIPROC_DIR and serves no endpoint."""
    return bool(os.environ.get(MULTIPROC_DIR))


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """Whether the standard OpenTelemetry variables ask for traces: an OTLP
    endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or ..._TRACES_ENDPOINT), or an
    exporter named in OTEL_TRACES_EXPORTER; never with OTEL_SDK_DISABLED=true
    or OTEL_TRACES_EXPORTER=none. Nothing set: off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = _exporters(environ)
    if exporters:
        return exporters != ["none"]
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip())


def tracing_problem(environ: Mapping[str, str]) -> str | None:
    """Why the OTEL_* variables cannot be honoured (one line), or None."""
    for exporter in _exporters(environ):
        if exporter not in EXPORTERS:
            return (f"OTEL_TRACES_EXPORTER={environ['OTEL_TRACES_EXPORTER']!r} names {exporter!r}: this server "
                    f"exports traces with {', '.join(EXPORTERS)} (OTLP over HTTP)")
    if not tracing_wanted(environ):
        return None
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(name, "").strip()
        if protocol:
            if protocol != "http/protobuf":
                return (f"{name}={protocol!r} is not supported: this server exports traces over OTLP/HTTP "
                        "with protobuf (http/protobuf); point it at the collector's HTTP port (4318)")
            break   # the signal-specific variable wins over the general one
    return None


def _exporters(environ: Mapping[str, str]) -> list[str]:
    return [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]


# The end of the span of the stream running in this context (set by the
# transport when tracing is on): a follow stream can last hours, so its span
# covers its start and catch-up only (docs/operations.md#traces).
_stream_caught_up: ContextVar[Callable[[], None] | None] = ContextVar("stream_caught_up", default=None)


def stream_caught_up() -> None:
    """Called by a stream once it has sent what existed when it started (its
    backlog, then the `caught_up` marker; the first state of a watch): its
    RPC span ends here. Nothing happens when tracing is off."""
    end = _stream_caught_up.get()
    if end is not None:
        _stream_caught_up.set(None)
        end()


def end_span_when_caught_up(end: Callable[[], None] | None) -> None:
    """The transport's side of stream_caught_up()."""
    _stream_caught_up.set(end)
