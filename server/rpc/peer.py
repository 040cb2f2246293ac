"""Who is at the other end of a call, as TLS proved it: the identity of a
verified client certificate (mTLS, TLS_CLIENT_CA_FILE).

grpc puts the certificate's properties in `context.auth_context()` only
after the handshake verified it against the client CAs, so a PeerIdentity
is always a verified one. It is exposed here, and written to the access log;
mapping it to a principal (which service, which scopes) is the
authentication layer's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The subject of a verified client certificate."""

    common_name: str
    dns_names: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    subject: str = ""   # the whole distinguished name, e.g. "CN=builder,O=Platform"

    def names(self) -> tuple[str, ...]:
        """The names the certificate proves, most specific first: URIs, DNS names, the CN."""
        return tuple(dict.fromkeys([*self.uris, *self.dns_names, *([self.common_name] if self.common_name else [])]))

    def __str__(self) -> str:
        """Short and stable, for logs: CN=builder DNS=builder.internal URI=spiffe://platform/builder."""
        parts = [f"CN={self.common_name}"] if self.common_name else []
        parts += [f"DNS={name}" for name in self.dns_names]
        parts += [f"URI={uri}" for uri in self.uris]
        return " ".join(parts) or self.subject


def _texts(values: Iterable[bytes] | None) -> tuple[str, ...]:
    return tuple(value.decode("utf-8", "replace") for value in values or ())


def identity_from_auth_context(auth: Mapping[str, Iterable[bytes]]) -> PeerIdentity | None:
    """The PeerIdentity in grpc's auth context, or None when no client certificate was presented."""
    if "x509_pem_cert" not in auth:
        return None
    common_name = _texts(auth.get("x509_common_name"))
    subject = _texts(auth.get("x509_subject"))
    return PeerIdentity(
        common_name=common_name[0] if common_name else "",
        dns_names=_texts(auth.get("peer_dns")),
        uris=_texts(auth.get("peer_uri")),
        subject=subject[0] if subject else "",
    )


def peer_identity(context: Any) -> PeerIdentity | None:
    """The verified client certificate's identity of this call
    (`grpc.aio.ServicerContext`), or None on a call without one."""
    return identity_from_auth_context(context.auth_context())
