"""Settings from the environment. `python -m server --help` prints this table."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

# name, default, description: the single source of the documentation.
ENVIRONMENT: list[tuple[str, str, str]] = [
    ("DATABASE_URL", "", "PostgreSQL URL (postgresql://user:pass@host:5432/db). When unset, "
     "`python -m server` starts an embedded PostgreSQL in EMBEDDED_PG_DIR."),
    ("GRPC_ADDRESS", "127.0.0.1:50051", "host:port to serve on; port 0 picks a free port "
     "(the chosen one is logged)."),
    ("DB_POOL_SIZE", "10", "database connections kept open per process."),
    ("DB_POOL_MAX_OVERFLOW", "10", "extra connections a process may open under load."),
    ("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR; INFO logs one line per RPC."),
    ("SHUTDOWN_GRACE_SECONDS", "10", "on SIGTERM/SIGINT, how long running RPCs may finish."),
    ("PAGE_TOKEN_SECRET", "", "key that signs page tokens; set the same value on every replica. "
     "When unset a fixed development key is used and a warning is logged."),
    ("HEALTH_CHECK_SECONDS", "2", "how often the database is pinged for the health service."),
    ("STREAM_HEARTBEAT_SECONDS", "15", "idle time after which a stream sends a heartbeat."),
    ("FEED_RING_BYTES", "8388608", "bytes of recent lines (events) kept in memory per followed build "
     "and kind; followers further behind read the database."),
    ("FEED_TOTAL_BYTES", "268435456", "bytes of recent lines and events kept in memory for all "
     "followed builds of a process; above it the largest rings lose their oldest entries."),
    ("EMBEDDED_PG_DIR", ".data/postgres", "data directory of the embedded PostgreSQL."),
]

DEV_PAGE_TOKEN_SECRET = "buildplatform-development-page-token-key"


def _env(name: str) -> str:
    default = next(d for n, d, _ in ENVIRONMENT if n == name)
    return os.environ.get(name, default)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    database_url: str
    grpc_address: str
    db_pool_size: int
    db_pool_max_overflow: int
    log_level: str
    shutdown_grace_seconds: float
    page_token_secret: str
    health_check_seconds: float
    stream_heartbeat_seconds: float
    feed_ring_bytes: int
    feed_total_bytes: int
    embedded_pg_dir: str

    @classmethod
    def from_env(cls) -> Settings:
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = _env(field.name.upper())
            try:
                values[field.name] = (
                    raw if field.type == "str" else int(raw) if field.type == "int" else float(raw)
                )
            except ValueError:
                raise SystemExit(f"{field.name.upper()}={raw!r} is not a number") from None
        return cls(**values)  # type: ignore[arg-type]


def help_text() -> str:
    width = max(len(name) for name, _, _ in ENVIRONMENT)
    lines = ["Environment variables:"]
    for name, default, description in ENVIRONMENT:
        shown = f" (default: {default})" if default else ""
        lines.append(f"  {name:<{width}}  {description}{shown}")
    return "\n".join(lines)


def sqlalchemy_url(database_url: str | None = None) -> str:
    """DATABASE_URL in the form SQLAlchemy wants: the psycopg 3 driver."""
    url = database_url if database_url is not None else os.environ.get("DATABASE_URL", "")
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise SystemExit(f"DATABASE_URL must start with postgresql://, got {url.split(':')[0]}://")


def libpq_url(database_url: str) -> str:
    """DATABASE_URL in the form libpq (psycopg.connect) wants."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)
