"""Test helpers for metrics and traces: a real Prometheus that scrapes, and a
local OTLP/HTTP receiver that decodes the spans it is sent."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.support import WAIT, LocalHandler, free_port, local_http_server

# `make test` installs Debian's and exports its path (PROMETHEUS=... picks another).
PROMETHEUS = os.environ.get("PROMETHEUS") or shutil.which("prometheus") or "/usr/bin/prometheus"


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query through the HTTP API."""
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(address, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single value of a query, None while it has no result."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None


@contextmanager
def prometheus(targets: list[str], directory: Path, *, interval: str = "1s") -> Iterator[Prometheus]:
    """Debian's prometheus, scraping `targets` (host:port) every `interval`."""
    if not Path(PROMETHEUS).exists():
        raise RuntimeError("prometheus is not installed: `apt-get install -y prometheus` (make test does it as root)")
    config = directory / "prometheus.yml"
    config.write_text(json.dumps({   # YAML is a superset of JSON
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": "buildplatform", "static_configs": [{"targets": targets}]}],
    }))
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    served = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                with urllib.request.urlopen(f"{served.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class OtlpReceiver:
    """Spans received over OTLP/HTTP (protobuf), in arrival order."""

    endpoint: str = ""
    spans: list[trace_pb2.Span] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def named(self, name: str) -> list[trace_pb2.Span]:
        with self.lock:
            return [span for span in self.spans if span.name == name]

    def all(self) -> list[trace_pb2.Span]:
        with self.lock:
            return list(self.spans)


def attributes(span: trace_pb2.Span) -> dict[str, Any]:
    """A span's attributes as plain values."""
    out: dict[str, Any] = {}
    for item in span.attributes:
        kind = item.value.WhichOneof("value")
        out[item.key] = getattr(item.value, kind) if kind else None
    return out


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP endpoint on a local port: OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint."""
    received = OtlpReceiver()

    class Handler(LocalHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.reply(404, "text/plain", b"")
                return
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            with received.lock:
                for resource_spans in request.resource_spans:
                    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            received.spans.append(span)
                            received.resources.append(resource)
            self.reply(200, "application/x-protobuf", trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

    with local_http_server(Handler) as base:
        received.endpoint = base
        yield received
