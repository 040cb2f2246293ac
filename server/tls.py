"""TLS on the gRPC and HTTP ports: certificate files checked at start, and
picked up again when they change on disk, without a restart.

grpc asks `CertificateFiles.fetch` for the configuration at every TLS
handshake (on one of its own threads). It stats the files and returns None
(keep the current configuration) unless one of them changed; only then does
it read them again. The HTTP port does the same with the standard library's
`ssl` (`CertificateFiles.ssl_context`): the listening context's SNI callback,
which OpenSSL calls at every handshake (with or without a server name), stats
the files and hands the connection a new context when they changed. Files that changed but cannot be used together (a key
that does not match the certificate, a half-written file) are not served: the
previous certificate stays in use, a warning says why, and the next change of
the files is tried again. New connections see a new certificate; connections
already open keep theirs until they close.

The files are checked with the standard library's `ssl` (no extra
dependency): a certificate file must hold PEM certificates, the key file an
unencrypted PEM private key that matches the certificate, and the client CA
file PEM certificates.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

log = logging.getLogger("server.tls")

T = TypeVar("T")

# What a stat of each file says: a change of any of them means new contents
# (an in-place write changes size or mtime, a rename-over the inode).
Signature = tuple[tuple[int, int, int], ...]


class TlsError(Exception):
    """The certificate files cannot be served; the message is one line saying which and what to do."""


@dataclass(frozen=True, slots=True)
class Material:
    chain: bytes
    key: bytes
    client_ca: bytes | None

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.chain)], root_certificates=self.client_ca)


def _refuse_encrypted() -> bytes:
    # Without a password callback OpenSSL would prompt on the terminal.
    raise TlsError("TLS_KEY_FILE holds an encrypted private key: give the server an unencrypted one")


def _check(cert_file: str, key_file: str, client_ca_file: str | None) -> None:
    """Raise TlsError naming the file that cannot be used, or return."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=cert_file)
    except (ssl.SSLError, OSError):
        raise TlsError(f"TLS_CERT_FILE={cert_file} holds no PEM certificate: give the certificate chain "
                       "(-----BEGIN CERTIFICATE-----)") from None
    try:
        context.load_cert_chain(cert_file, key_file, password=_refuse_encrypted)
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(f"TLS_KEY_FILE={key_file} is not the key of the certificate in TLS_CERT_FILE={cert_file}: "
                           "give the key the certificate was issued for") from None
        raise TlsError(f"TLS_KEY_FILE={key_file} holds no PEM private key: give the certificate's unencrypted key "
                       "(-----BEGIN PRIVATE KEY-----)") from None
    except OSError as error:
        raise TlsError(f"TLS_KEY_FILE={key_file} cannot be read ({error.strerror})") from None
    if client_ca_file:
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except (ssl.SSLError, OSError):
            raise TlsError(f"TLS_CLIENT_CA_FILE={client_ca_file} holds no PEM certificate: give the certificates "
                           "of the CAs that sign client certificates") from None


def _server_context(cert_file: str, key_file: str, client_ca_file: str | None) -> ssl.SSLContext:
    """A server context for the HTTP port (HTTP/1.1 only: uvicorn speaks no HTTP/2)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file, password=_refuse_encrypted)
    if client_ca_file:
        context.load_verify_locations(cafile=client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])
    return context


class CertificateFiles:
    """The server's certificate, key and (for mTLS) client CA files. Each
    port watches the files with an instance of its own."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str | None = None) -> None:
        self.paths = (cert_file, key_file, *((client_ca_file,) if client_ca_file else ()))
        self.cert_file, self.key_file, self.client_ca_file = cert_file, key_file, client_ca_file
        self._lock = threading.Lock()
        self._served: Signature | None = None
        self._refused: Signature | None = None
        self._unreadable = False

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None

    def _signature(self) -> Signature:
        stats = [os.stat(path) for path in self.paths]
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)

    def _checked(self, read: Callable[[], T]) -> tuple[Signature, T]:
        """Check the files and `read` them; TlsError when they cannot be served.
        The signature is taken before and after, so contents read while a
        file was being replaced are never taken for checked ones."""
        try:
            before = self._signature()
            _check(self.cert_file, self.key_file, self.client_ca_file)
            value = read()
            after = self._signature()
        except OSError as error:
            raise TlsError(f"{error.filename} cannot be read ({error.strerror})") from None
        if before != after:
            raise TlsError("the certificate files changed while they were read")
        return after, value

    def load(self) -> tuple[Signature, Material]:
        """The files' contents, checked (for grpc)."""
        return self._checked(lambda: Material(
            chain=_read(self.cert_file), key=_read(self.key_file),
            client_ca=_read(self.client_ca_file) if self.client_ca_file else None,
        ))

    def _context(self) -> tuple[Signature, ssl.SSLContext]:
        return self._checked(lambda: _server_context(self.cert_file, self.key_file, self.client_ca_file))

    def ssl_context(self) -> ssl.SSLContext:
        """A context that serves the files now and follows them (for the
        HTTP port); TlsError when they cannot be served now."""
        self._served, listening = self._context()
        current = listening

        def follow(connection: Any, server_name: str | None, context: ssl.SSLContext) -> None:
            nonlocal current
            fresh = self._refresh(self._context)
            if fresh is not None:
                current = fresh
            if current is not context:
                connection.context = current

        listening.sni_callback = follow
        return listening

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that follow the files; TlsError when they cannot be served now."""
        self._served, material = self.load()
        return grpc.dynamic_ssl_server_credentials(
            material.configuration(), self.fetch, require_client_authentication=self.mutual
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by grpc at every handshake: a new configuration when the
        files changed and can be served, else None (keep the current one)."""
        material = self._refresh(self.load)
        return None if material is None else material.configuration()

    def _refresh(self, load: Callable[[], tuple[Signature, T]]) -> T | None:
        """What `load` makes of the files when they changed since they were
        last served and can be served, else None (keep the current ones).
        Never raises: an exception here would fail the handshake."""
        try:
            with self._lock:
                try:
                    now = self._signature()
                except OSError as error:
                    if not self._unreadable:  # once, not at every handshake
                        log.warning("cannot stat the TLS files (%s: %s); still serving the previous certificate",
                                    error.filename, error.strerror)
                    self._unreadable = True
                    return None
                self._unreadable = False
                if now in (self._served, self._refused):
                    return None
                try:
                    signature, material = load()
                except TlsError as error:
                    self._refused = now
                    log.warning("the TLS files changed but cannot be served (%s); still serving the previous "
                                "certificate, and trying again when the files change", error)
                    return None
                self._served = signature
                log.info("the TLS files changed: new connections get the new certificate",
                         extra={"tls_cert_file": self.cert_file})
                return material
        except Exception as error:
            log.warning("cannot check the TLS files (%s); still serving the previous certificate", error)
            return None


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()
