"""METRICS_ADDRESS: the Prometheus text format over HTTP (or HTTPS), on a
thread of its own.

Who serves it:
- one process (WORKERS=1): the process itself, from its own registry;
- WORKERS > 1: the supervisor, which records nothing itself. It makes a
  fresh directory for PROMETHEUS_MULTIPROC_DIR and gives it to every worker
  in its environment, so each worker's prometheus_client (imported after
  the process started) writes its values into memory-mapped files there; a
  scrape sums them (MultiProcessCollector), and a worker that exits is
  marked dead (`worker_exited`) so that its gauges stop counting.

A thread, not the event loop: a scrape then never waits for the loop (a
saturated server must still say why it is saturated), and the loop never
waits for a scrape. With TLS (TLS_CERT_FILE) the endpoint serves the same
certificate files as the other ports, followed on rotation, and with
TLS_CLIENT_CA_FILE requires a client certificate of those CAs.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import tempfile
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, MetricsHandler, multiprocess


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket, handler: type[Any], context: ssl.SSLContext | None) -> None:
        super().__init__(sock.getsockname()[:2], handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.context = context
        self.server_activate()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # On the request's own thread: a slow or broken TLS handshake holds
        # that thread only, never the accepting one.
        request.settimeout(10)
        if self.context is not None:
            try:
                request = self.context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)


class MetricsEndpoint:
    """The metrics of `registry` served on the listening socket `sock`."""

    def __init__(self, sock: socket.socket, *, registry: CollectorRegistry = REGISTRY,
                 context: ssl.SSLContext | None = None) -> None:
        self.port: int = sock.getsockname()[1]
        self._server = _Server(sock, MetricsHandler.factory(registry), context)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> MetricsEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class Workers:
    """The supervisor's side of multiprocess mode: the directory its
    workers write to (fresh for each supervisor), and a registry that sums it."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="buildplatform-metrics-")
        self.registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(self.registry, path=self.directory)  # type: ignore[no-untyped-call]

    def worker_exited(self, pid: int) -> None:
        """Its counters and histograms keep counting (they only grow); its
        gauges stop (every gauge here sums or maxes live workers only)."""
        multiprocess.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
