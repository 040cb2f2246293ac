"""Settings from the environment. `python -m server --help` prints this table.

Every setting is parsed and checked at start-up: a server with a wrong
setting refuses to start with one line that names each wrong variable and
says what it must be, never with a traceback. (pydantic-settings would do the
same; it was weighed and left out because importing it added 25 MB of
resident memory to a process, measured here, for a dozen variables.)
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from server.domain.limits import MAX_RETENTION_DAYS, MIN_RETENTION_DAYS

# name, default, description: the single source of the documentation.
ENVIRONMENT: list[tuple[str, str, str]] = [
    ("DATABASE_URL", "", "PostgreSQL URL (postgresql://user:pass@host:5432/db), or a primary and its standbys "
     "(postgresql://user:pass@h1:5432,h2:5432/db?target_session_attrs=read-write: docs/deployment.md). When unset, "
     "`python -m server` starts an embedded PostgreSQL in EMBEDDED_PG_DIR."),
    ("GRPC_ADDRESS", "127.0.0.1:50051", "host:port to serve gRPC on; port 0 picks a free port "
     "(the chosen one is logged)."),
    ("HTTP_ADDRESS", "127.0.0.1:8080", "host:port to serve every service over HTTP on (Connect, gRPC-Web, "
     "JSON POST; /healthz, /readyz; docs/http.md); port 0 picks a free port (logged); empty serves no HTTP."),
    ("HTTP_CORS_ORIGINS", "", "comma-separated origins (https://app.example.com) whose web pages may call "
     "the HTTP port (CORS); `*` allows any origin; none by default."),
    ("METRICS_ADDRESS", "127.0.0.1:9464", "host:port to serve Prometheus metrics on (GET /metrics; "
     "docs/operations.md#metrics); with WORKERS the supervisor serves every worker's metrics there; port 0 picks "
     "a free port (logged); empty serves none."),
    ("TLS_CERT_FILE", "", "PEM certificate chain; with TLS_KEY_FILE the server serves TLS on GRPC_ADDRESS, "
     "HTTP_ADDRESS and METRICS_ADDRESS. Files replaced on disk are picked up by new connections without a restart."),
    ("TLS_KEY_FILE", "", "PEM private key (unencrypted) of TLS_CERT_FILE."),
    ("TLS_CLIENT_CA_FILE", "", "PEM certificates of the CAs that sign client certificates; when set, every "
     "client must present a certificate they signed (mTLS), and its identity is in the access log. A call "
     "without a bearer token is then the service whose token is named like the certificate's CN, a DNS "
     "name or a URI of it (docs/security.md)."),
    ("ALLOW_PLAINTEXT", "false", "true serves plaintext (no TLS) on an address other than loopback "
     "(GRPC_ADDRESS or HTTP_ADDRESS), for a network that is encrypted otherwise (a service mesh); without it "
     "that is refused at start."),
    ("WORKERS", "1", "serving processes on one port (each of the two), supervised (a crashed one is "
     "restarted); 0 means one per core. Each has its own database pools (docs/deployment.md)."),
    ("REUSE_PORT", "false", "true lets several server processes listen on one port (both ports) "
     "(SO_REUSEPORT); without it a port in use is an error."),
    ("DB_POOL_SIZE", "10", "database connections kept open per process."),
    ("DB_POOL_MAX_OVERFLOW", "10", "extra connections a process may open under load."),
    ("DB_POOL_TIMEOUT_SECONDS", "2", "longest a call waits for a free database connection "
     "(never longer than the call's deadline); then UNAVAILABLE with retry advice."),
    ("DB_TIMEOUT_SECONDS", "5", "longest a call's database work may take, connecting included "
     "(never longer than the call's deadline); then UNAVAILABLE. Also the connect timeout."),
    ("MAX_CONCURRENT_CALLS", "200", "unary calls a process works on at once; more are refused "
     "at once with RESOURCE_EXHAUSTED and retry advice."),
    ("MAX_STREAMS", "10000", "server-streaming calls (follows, watches) a process keeps open "
     "at once; more are refused with RESOURCE_EXHAUSTED."),
    ("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR; INFO logs one line per RPC."),
    ("SHUTDOWN_GRACE_SECONDS", "10", "on SIGTERM/SIGINT, how long running RPCs may finish; "
     "what still runs then is answered UNAVAILABLE."),
    ("PAGE_TOKEN_SECRET", "", "key that signs page tokens; when unset, a random key generated once and "
     "kept in the database is used, which every replica of that database shares."),
    ("AUTH_JWKS_URL", "", "https URL of the identity provider's JWKS (Clerk: "
     "https://<your-app>.clerk.accounts.dev/.well-known/jwks.json); user session JWTs are verified "
     "against its keys, cached and refetched when a token names an unknown kid."),
    ("AUTH_JWT_PUBLIC_KEY_FILE", "", "PEM public key (RSA or EC) that verifies user session JWTs, "
     "instead of AUTH_JWKS_URL."),
    ("AUTH_JWT_ISSUER", "", "the `iss` every user session JWT must carry; required with AUTH_JWKS_URL "
     "or AUTH_JWT_PUBLIC_KEY_FILE."),
    ("AUTH_JWT_AUDIENCE", "", "when set, the `aud` every user session JWT must carry."),
    ("AUTH_AUTHORIZED_PARTIES", "", "when set, comma-separated origins one of which a session JWT's "
     "`azp` must be (Clerk: your front end's origin, https://app.example.com)."),
    ("AUTH_BOOTSTRAP_TOKEN_FILE", ".data/admin-token", "where the first start writes the admin service "
     "token it creates when no service token exists (mode 0600)."),
    ("REFLECTION", "true", "false makes server reflection need a valid credential, like every RPC "
     "(the health service always stays open)."),
    ("HEALTH_CHECK_SECONDS", "2", "how often the database is pinged for the health service."),
    ("STREAM_HEARTBEAT_SECONDS", "15", "idle time after which a stream sends a heartbeat (sent within 1.5 times this)."),
    ("FEED_RING_BYTES", "8388608", "bytes of recent lines (events) kept in memory per followed build "
     "and kind; followers further behind read the database."),
    ("FEED_TOTAL_BYTES", "268435456", "bytes of recent lines and events kept in memory for all "
     "followed builds of a process; above it the largest rings lose their oldest entries."),
    ("NOTIFY_TICK_SECONDS", "0.005", "how long each process gathers its committed appends before it announces "
     "them to the other replicas in one notification (docs/streaming.md#how-replicas-learn-of-new-lines)."),
    ("FEED_POLL_SECONDS", "1", "how often each process reads the positions of the builds it follows, the "
     "safety net for a notification lost with a process killed between an append's commit and its notification."),
    ("ARCHIVE_URL", ".data/archive", "where finished builds' logs and events are archived (docs/lifecycle.md): "
     "a directory (created when missing), file:///path, s3://bucket/prefix, gs://bucket/prefix or "
     "az://container/prefix, with each cloud's standard credentials from the environment; empty archives nothing."),
    ("ARCHIVE", "true", "false archives nothing (whatever ARCHIVE_URL says): logs and events stay in PostgreSQL."),
    ("ARCHIVE_AFTER_SECONDS", "600", "how long after a build finished its logs and events are archived "
     "(0: at the archiver's next look)."),
    ("ARCHIVE_INTERVAL_SECONDS", "10", "how often each process's archiver looks for builds due to be archived "
     "when it found none last time."),
    ("ARCHIVE_LEASE_SECONDS", "60", "how long an archiver's claim on a build lasts unless renewed (every third "
     "of it while it works): a build whose process died is archived by another after this."),
    ("ARCHIVE_CPU_SHARE", "0.25", "the most of its process's CPU an archiver takes (0.01 to 1): after each "
     "batch of rows it converted and compressed, it rests so that appends and reads keep the rest."),
    ("EMBEDDED_PG_DIR", ".data/postgres", "data directory of the embedded PostgreSQL."),
    ("LOG_RETENTION_DAYS", "90", "days a finished build's logs and events are kept after its finish_time "
     "(1 to 3650), unless its project sets log_retention_days; then they are deleted and reads answer "
     "LOGS_EXPIRED (docs/lifecycle.md#retention)."),
    ("JANITOR_SECONDS", "60", "how often each process's janitor expires logs past their retention, empties "
     "deleted builds' objects from the archive and creates and drops the hot tables' windows; 0 runs none."),
    ("HOT_PARTITION_SECONDS", "3600", "width of the time windows the hot log and event tables are partitioned in "
     "(by build id, which holds the build's creation time); read by the migration that partitions them too."),
    ("HOT_PARTITION_GRACE_SECONDS", "3600", "how long every build of a window must have been out of the hot tier "
     "(archived, expired or deleted) before the janitor drops the window, giving its space back."),
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


# --- parsers: each returns the value or raises ValueError saying what it must be ---------


def _text(raw: str) -> str:
    return raw


def _database_url(raw: str) -> str:
    if raw and not raw.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        raise ValueError("must start with postgresql://")
    return raw


def _address(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("must be host:port, for example 127.0.0.1:50051 or [::]:50051")
    return raw


def _optional_address(example: str, empty: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not raw.strip():
            return ""
        host, sep, port = raw.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"must be host:port, for example 127.0.0.1:{example} or [::]:{example}, or empty {empty}")
        return raw

    return parse


# The schemes ARCHIVE_URL may name besides a local directory (a path or file:///path).
ARCHIVE_SCHEMES = ("s3", "gs", "az")


def parse_archive_url(raw: str) -> str:
    """ARCHIVE_URL: '' (archiving off), a local directory (a path or
    file:///path), or s3://, gs://, az:// with a bucket (container) and an
    optional prefix. Credentials and options never go in it: each cloud's
    own environment variables give them (server.archive.objects)."""
    value = raw.strip()
    if not value:
        return ""
    scheme, sep, rest = value.partition("://")
    if not sep:
        return value
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError("must name an absolute directory after file:// (file:///var/lib/buildplatform/archive)")
        return value
    if scheme not in ARCHIVE_SCHEMES:
        raise ValueError("must be a directory, file:///path, s3://bucket/prefix, gs://bucket/prefix or "
                         "az://container/prefix, or empty to archive nothing")
    bucket = rest.partition("/")[0]
    if not bucket or "@" in bucket or "?" in rest or "#" in rest:
        raise ValueError(f"must be {scheme}://bucket/prefix with no credentials or options in it (they come from "
                         "the cloud's standard environment variables, docs/lifecycle.md)")
    return value


def _origins(raw: str) -> tuple[str, ...]:
    origins = _names(raw)
    for origin in origins:
        if origin == "*":
            continue
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest or not rest.isascii():
            raise ValueError(f"holds {origin!r}: each origin must be scheme://host[:port] with no path "
                             "(https://app.example.com), or *")
    return origins


def _readable_file(raw: str) -> str:
    if not raw:
        return raw
    if not os.path.exists(raw):
        raise ValueError("does not exist")
    if not os.path.isfile(raw):
        raise ValueError("is not a file")
    if not os.access(raw, os.R_OK):
        raise ValueError("cannot be read by this process (check its permissions)")
    return raw


def _jwks_url(raw: str) -> str:
    if raw and not raw.startswith(("https://", "http://")):
        raise ValueError("must be an https:// URL")
    return raw


def _public_key_file(raw: str) -> str:
    if not raw:
        return raw
    _readable_file(raw)
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    with open(raw, "rb") as file:
        data = file.read()
    try:
        key = load_pem_public_key(data)
    except ValueError:
        raise ValueError("is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError("must hold an RSA or EC public key")
    return raw


def _names(raw: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("is not a whole number") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return parse


def _bounded(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = _whole(minimum)(raw)
        if value > maximum:
            raise ValueError(f"must be between {minimum} and {maximum}")
        return value

    return parse


def _seconds(*, zero: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("is not a number of seconds") from None
        if not (value >= 0 if zero else value > 0) or value != value or value == float("inf"):
            raise ValueError("must be a finite number of seconds " + ("of 0 or more" if zero else "above 0"))
        return value

    return parse


def _fraction(low: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"is not a number: give one from {low:g} to 1") from None
        if not low <= value <= 1:
            raise ValueError(f"must be from {low:g} to 1")
        return value

    return parse


def _log_level(raw: str) -> str:
    if raw.upper() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return raw.upper()


def setting(parse: Callable[[str], Any]) -> Any:
    return field(metadata={"parse": parse})


# Fields with no parser of their own are parsed by their type: int as a
# positive whole number, float as positive seconds, bool, str as is.
_BY_TYPE: dict[str, Callable[[str], Any]] = {
    "int": _whole(1), "float": _seconds(), "bool": _boolean, "str": _text,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    database_url: str = setting(_database_url)
    grpc_address: str = setting(_address)
    http_address: str = setting(_optional_address("8080", "to serve no HTTP"))
    http_cors_origins: tuple[str, ...] = setting(_origins)
    metrics_address: str = setting(_optional_address("9464", "to serve no metrics"))
    tls_cert_file: str = setting(_readable_file)
    tls_key_file: str = setting(_readable_file)
    tls_client_ca_file: str = setting(_readable_file)
    allow_plaintext: bool = setting(_boolean)
    workers: int = setting(_whole(0))
    reuse_port: bool = setting(_boolean)
    db_pool_size: int = setting(_whole(1))
    db_pool_max_overflow: int = setting(_whole(0))
    db_pool_timeout_seconds: float = setting(_seconds())
    db_timeout_seconds: float = setting(_seconds())
    max_concurrent_calls: int = setting(_whole(1))
    max_streams: int = setting(_whole(1))
    log_level: str = setting(_log_level)
    shutdown_grace_seconds: float = setting(_seconds(zero=True))
    page_token_secret: str = setting(_text)
    auth_jwks_url: str = setting(_jwks_url)
    auth_jwt_public_key_file: str = setting(_public_key_file)
    auth_jwt_issuer: str = setting(_text)
    auth_jwt_audience: str = setting(_text)
    auth_authorized_parties: tuple[str, ...] = setting(_names)
    auth_bootstrap_token_file: str = setting(_text)
    reflection: bool = setting(_boolean)
    health_check_seconds: float = setting(_seconds())
    stream_heartbeat_seconds: float = setting(_seconds())
    feed_ring_bytes: int = setting(_whole(1))
    feed_total_bytes: int = setting(_whole(1))
    notify_tick_seconds: float = setting(_seconds())
    feed_poll_seconds: float = setting(_seconds())
    archive_url: str = setting(parse_archive_url)
    archive: bool = setting(_boolean)
    archive_after_seconds: float = setting(_seconds(zero=True))
    archive_interval_seconds: float = setting(_seconds())
    archive_lease_seconds: float = setting(_seconds())
    archive_cpu_share: float = setting(_fraction(0.01))
    embedded_pg_dir: str = setting(_text)
    log_retention_days: int = setting(_bounded(MIN_RETENTION_DAYS, MAX_RETENTION_DAYS))
    janitor_seconds: float = setting(_seconds(zero=True))
    hot_partition_seconds: int = setting(_bounded(60, 366 * 86400))
    hot_partition_grace_seconds: float = setting(_seconds(zero=True))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """The settings, or SystemExit with one line naming every invalid one."""
        env = os.environ if environ is None else environ
        defaults = {name: default for name, default, _ in ENVIRONMENT}
        values: dict[str, Any] = {}
        problems: list[str] = []
        for item in fields(cls):
            name = item.name.upper()
            raw = env.get(name, defaults[name])
            parse = item.metadata.get("parse") or _BY_TYPE[str(item.type)]
            try:
                values[item.name] = parse(raw)
            except ValueError as error:
                problems.append(f"{name}={raw!r} {error}")
        if not problems:
            problems = _together(values)
        if problems:
            raise SystemExit(
                f"invalid setting{'s' if len(problems) > 1 else ''}: {'; '.join(problems)} "
                "(python -m server --help lists them all)"
            )
        return cls(**values)


def _together(values: dict[str, Any]) -> list[str]:
    """What is wrong with settings that are valid one by one but not together."""
    cert, key, client_ca = values["tls_cert_file"], values["tls_key_file"], values["tls_client_ca_file"]
    if bool(cert) != bool(key):
        given, missing = ("TLS_CERT_FILE", "TLS_KEY_FILE") if cert else ("TLS_KEY_FILE", "TLS_CERT_FILE")
        return [f"{given} is set but {missing} is not: TLS needs both the certificate and its key"]
    if client_ca and not cert:
        return ["TLS_CLIENT_CA_FILE is set without TLS_CERT_FILE and TLS_KEY_FILE: mTLS needs the server's "
                "certificate and key too"]
    jwks, pem = values["auth_jwks_url"], values["auth_jwt_public_key_file"]
    if jwks and pem:
        return ["AUTH_JWKS_URL and AUTH_JWT_PUBLIC_KEY_FILE are both set: user tokens are verified against one "
                "of them; unset the other"]
    if (jwks or pem) and not values["auth_jwt_issuer"]:
        given = "AUTH_JWKS_URL" if jwks else "AUTH_JWT_PUBLIC_KEY_FILE"
        return [f"{given} is set but AUTH_JWT_ISSUER is not: set it to the `iss` of your identity provider's "
                "tokens (Clerk: https://<your-app>.clerk.accounts.dev)"]
    if not values["auth_bootstrap_token_file"]:
        return ["AUTH_BOOTSTRAP_TOKEN_FILE is empty: give the path where the first admin token is written"]
    addresses = [("GRPC_ADDRESS", values["grpc_address"]), ("HTTP_ADDRESS", values["http_address"]),
                 ("METRICS_ADDRESS", values["metrics_address"])]
    for name, address in addresses:
        if address and not cert and not values["allow_plaintext"] and not _is_loopback(address.rpartition(":")[0]):
            return [f"{name}={address!r} would serve plaintext beyond this machine: set TLS_CERT_FILE and "
                    "TLS_KEY_FILE, or ALLOW_PLAINTEXT=true when the network encrypts for you (a service mesh)"]
    for index, (name, address) in enumerate(addresses):
        for other, taken in addresses[:index]:
            if address and taken and _same_port(taken, address):
                return [f"{other} and {name} are both {address!r}: give {name} its own port "
                        f"(or {name}='' to serve no {'HTTP' if name == 'HTTP_ADDRESS' else 'metrics'})"]
    if values["archive_lease_seconds"] < 1:
        return [f"ARCHIVE_LEASE_SECONDS={values['archive_lease_seconds']:g} is too short to be renewed in time "
                "(every third of it): give it at least 1 (the default is 60)"]
    return []


def _same_port(first: str, second: str) -> bool:
    """Whether two addresses name one port (port 0 means a free one each)."""
    host, _, port = first.rpartition(":")
    other_host, _, other_port = second.rpartition(":")
    return port == other_port and port != "0" and host.strip("[]") == other_host.strip("[]")


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
            return "postgresql+psycopg://" + _hosts_in_query(url[len(prefix):])
    raise SystemExit(f"DATABASE_URL must start with postgresql://, got {url.split(':')[0]}://")


def _hosts_in_query(rest: str) -> str:
    """`user@h1:p1,h2:p2/db?query` (libpq's multi-host form, after the
    scheme) as SQLAlchemy's: `user@/db?host=h1:p1&host=h2:p2&query`.
    SQLAlchemy's URL parser reads `h1:p1,h2:p2` as one host whose port is
    `p1,h2:p2` and fails; its psycopg dialect hands the `host` list to libpq
    as libpq's own lists, so both paths reach the same hosts in the same
    order (with target_session_attrs and the rest of the query untouched).
    A URL with one host is returned as it is."""
    netloc, _, tail = rest.partition("/")
    if "?" in netloc:   # no path: `user@h1,h2?query`
        netloc, _, query = netloc.partition("?")
        tail = "?" + query
    userinfo, at, hosts = netloc.rpartition("@")
    if "," not in hosts:
        return rest
    path, _, query = tail.partition("?")
    listed = "&".join(f"host={host}" for host in hosts.split(",") if host)
    return f"{userinfo}{at}/{path}?{listed}" + (f"&{query}" if query else "")


def libpq_url(database_url: str) -> str:
    """DATABASE_URL in the form libpq (psycopg.connect) wants."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)
