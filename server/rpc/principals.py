"""Who is calling, for the grpc transport: the interceptor authenticates
each call (server.auth) and keeps its principal here for the call's task;
the adapter reads it with `caller()` and hands it to the core.

What proves the caller: the `authorization: Bearer <credential>` metadata,
or, on an mTLS connection, a call without it is the service named like the
client certificate (server.auth.Authenticator.authenticate_certificate).
Health is open to every caller, reflection too unless REFLECTION=false.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from server.auth import Authenticator
from server.domain.access import Principal
from server.rpc.peer import PeerIdentity

_current: ContextVar[Principal] = ContextVar("principal")

HEALTH = "/grpc.health.v1.Health/"
REFLECTION = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")


def caller(context: Any) -> Principal:
    """The principal of the running call (set by the interceptor)."""
    return _current.get()


def _authorization(context: Any) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None


class Gate:
    """Authenticates the calls that need it."""

    def __init__(self, authenticator: Authenticator, *, reflection_open: bool = True) -> None:
        self.authenticator = authenticator
        self.open = (HEALTH, *REFLECTION) if reflection_open else (HEALTH,)

    def is_open(self, method: str) -> bool:
        return method.startswith(self.open)

    async def authenticate(self, context: Any, certificate: PeerIdentity | None) -> Principal:
        """The principal of this call, kept for `caller()`; Unauthenticated when none is proved."""
        authorization = _authorization(context)
        if authorization is None and certificate is not None:
            principal = await self.authenticator.authenticate_certificate(certificate.names())
        else:
            principal = await self.authenticator.authenticate(authorization)
        _current.set(principal)
        return principal
