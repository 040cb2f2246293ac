"""The calls a process works on, whatever the transport that carries them.

- `Calls`: admission (a process works on at most MAX_CONCURRENT_CALLS unary
  calls and MAX_STREAMS streams at once, over gRPC and HTTP together; the
  excess is refused at once with RESOURCE_EXHAUSTED and RetryInfo) and the
  drain at shutdown (running calls get the grace period, then what is left
  is answered UNAVAILABLE, never left to be cancelled by the server's stop);
- `request_id()`: the caller's `x-request-id`, or a new one;
- `settle()`: the google.rpc.Status that ends a call that raised;
- `log_call()`: the access log line, one per call, with the same fields for
  every transport.

`Calls` also carries what both transports record about every call when it
is turned on: the RPC metrics (server.telemetry.metrics, METRICS_ADDRESS)
and the RPC spans (server.telemetry.tracing, the OTEL_* variables).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.rpc import status_pb2

from server.domain.access import Principal
from server.domain.errors import DomainError, ResourceExhausted, Unavailable
from server.store.db import DatabaseUnavailable
from server.transport.status import to_status

if TYPE_CHECKING:
    from server.telemetry.metrics import Metrics
    from server.telemetry.tracing import RpcTracer

log = logging.getLogger("server.access")
error_log = logging.getLogger("server.rpc")

# Errors a caller can cause or a retry can cure; anything else is a bug,
# logged with its traceback.
EXPECTED = (DomainError, DatabaseUnavailable)

SHUTTING_DOWN = "the server is shutting down; retry the call (on another replica)"


def request_id(offered: str | None) -> str:
    """The request id of a call: the one the caller sent in `x-request-id`
    when it is printable and at most 128 characters, else a new one."""
    if offered and offered.isprintable() and len(offered) <= 128:
        return offered
    return os.urandom(8).hex()


@dataclass(slots=True)
class _Limit:
    """How many calls of one kind a process works on, and how many it may."""

    maximum: int
    says: str     # what a refusal says, with {count}
    count: int = 0


class Calls:
    """The calls this process works on: admission limits, and the drain at shutdown."""

    RETRY_AFTER = 1.0  # seconds a refused caller is advised to wait
    QUIET = 0.25       # seconds without a new call before a draining server stops

    def __init__(
        self, *, max_unary: int, max_streams: int, metrics: Metrics | None = None, tracer: RpcTracer | None = None
    ) -> None:
        self.unary = _Limit(max_unary, "this server is working on {count} calls, its limit (MAX_CONCURRENT_CALLS)")
        self.streams = _Limit(max_streams, "this server has {count} streams open, its limit (MAX_STREAMS)")
        self.running: set[asyncio.Task[Any]] = set()
        self.draining = False
        # Shutdown began: new calls are answered UNAVAILABLE at once, with
        # retry advice, while the server still takes them (see drain()).
        self.refusing = False
        self.last_refusal = 0.0
        self.metrics = metrics   # None: METRICS_ADDRESS is empty
        self.tracer = tracer     # None: tracing is off

    def admit(self, stream: bool) -> None:
        """Count the call in, or raise ResourceExhausted."""
        if self.refusing:
            self.last_refusal = time.monotonic()
            raise Unavailable(SHUTTING_DOWN, retry_after=self.RETRY_AFTER)
        limit = self.streams if stream else self.unary
        if limit.count >= limit.maximum:
            if self.metrics is not None:
                self.metrics.refused["stream" if stream else "unary"].inc()
            raise ResourceExhausted(
                limit.says.format(count=limit.count) + "; retry after a pause, or on another replica",
                retry_after=self.RETRY_AFTER,
            )
        limit.count += 1
        task = asyncio.current_task()
        if task is not None:
            self.running.add(task)

    def release(self, stream: bool) -> None:
        (self.streams if stream else self.unary).count -= 1
        task = asyncio.current_task()
        if task is not None:
            self.running.discard(task)

    async def drain(self, grace: float) -> None:
        """Stop taking calls: from now on a new call is answered UNAVAILABLE
        with retry advice (RETRY_AFTER) while the transports still take
        them. Wait up to `grace` seconds for the running calls to end and
        for the callers to go quiet (no call refused for QUIET seconds: they
        are waiting out the advice, or went to another replica); then end
        what still runs with UNAVAILABLE (their transports see `draining`).

        Only then may the transports stop: gRPC's core cancels the calls it
        had queued but not handed over yet when its server shuts down, and
        a CANCELLED call is one no client retries. Refusing first empties
        that queue with answers a client's retry policy understands."""
        self.refusing = True
        began = time.monotonic()
        deadline = began + grace
        while time.monotonic() < deadline and (
            self.running or time.monotonic() - max(self.last_refusal, began) < self.QUIET
        ):
            await asyncio.sleep(0.02)
        if not self.running:
            return
        self.draining = True
        left = list(self.running)
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=2.0)


def settle(error: BaseException, calls: Calls, method: str, request_id: str) -> status_pb2.Status | None:
    """The status that answers a call ended by `error`, or None when no
    answer is due (the caller cancelled it). A call cut by the drain at the
    end of the shutdown grace period is UNAVAILABLE (retryable), not
    CANCELLED; an unexpected error is logged with its traceback and answered
    INTERNAL with the request id, never with the traceback."""
    if isinstance(error, asyncio.CancelledError):
        if not calls.draining:
            return None
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        error = Unavailable(SHUTTING_DOWN)
    if not isinstance(error, EXPECTED):
        error_log.error("unhandled error in %s", method, exc_info=error, extra={"request_id": request_id})
    return to_status(error, request_id)


def log_call(
    method: str, code: str, seconds: float, peer: str, request_id: str,
    principal: Principal | None, client_cert: object | None = None, transport: str | None = None,
    trace_id: str | None = None,
) -> None:
    """The access log line of a call that took `seconds`, written when its
    status is known; with tracing on, it names the call's trace."""
    if not log.isEnabledFor(logging.INFO):
        return
    extra: dict[str, Any] = {
        "method": method,
        "code": code,
        "duration_ms": round(seconds * 1000, 3),
        "peer": peer,
        "request_id": request_id,
    }
    if principal is not None:
        extra["principal"] = principal.label()
    if client_cert is not None:
        extra["client_cert"] = str(client_cert)
    if transport is not None:
        extra["transport"] = transport
    if trace_id is not None:
        extra["trace_id"] = trace_id
    log.info("rpc", extra=extra)
