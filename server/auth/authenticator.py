"""authenticate(): the value of an `authorization` header in, a Principal out.

The credential decides the path, by its form:
  bps_...      a service token: looked up by its SHA-256 (revoked: refused)
  bpa_...      a build agent token: looked up likewise, with its build and expiry
  a.b.c        a user session JWT: verified offline, then its `sub` is looked
               up as a User's clerk_id
Verified credentials are cached (CredentialCache) so that a call that repeats
a credential pays a hash and a dict lookup, not a signature check or a query.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol, TypeVar

from server.auth.cache import CredentialCache
from server.auth.sessions import JwksKeys, PemKey, SessionVerifier
from server.config import Settings
from server.domain import tokens
from server.domain.access import Principal
from server.domain.errors import Unauthenticated
from server.store import credentials
from server.store.db import Database

MAX_CREDENTIAL_CHARS = 16_384


class _Revocable(Protocol):
    @property
    def revoke_time(self) -> datetime | None: ...


T = TypeVar("T", bound=_Revocable)


def bearer(authorization: str | None) -> str:
    """The credential of `Bearer <credential>`; Unauthenticated when absent or another scheme."""
    if authorization is None or not authorization.strip():
        raise Unauthenticated("MISSING")
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential:
        raise Unauthenticated("MALFORMED", "expected `Bearer <token>`")
    if len(credential) > MAX_CREDENTIAL_CHARS or not credential.isascii():
        raise Unauthenticated("MALFORMED", "not a token")
    return credential


class Authenticator:
    def __init__(
        self,
        db: Database,
        *,
        sessions: SessionVerifier | None = None,
        cache: CredentialCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.sessions = sessions
        self.cache = cache if cache is not None else CredentialCache(clock=clock)
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> Authenticator:
        keys: JwksKeys | PemKey | None = None
        if settings.auth_jwks_url:
            keys = JwksKeys(settings.auth_jwks_url)
        elif settings.auth_jwt_public_key_file:
            keys = PemKey.from_file(settings.auth_jwt_public_key_file)
        sessions = None if keys is None else SessionVerifier(
            keys,
            issuer=settings.auth_jwt_issuer,
            audience=settings.auth_jwt_audience,
            authorized_parties=settings.auth_authorized_parties,
        )
        return cls(db, sessions=sessions)

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal the credential in `authorization` proves, or Unauthenticated saying why not."""
        credential = bearer(authorization)
        key = tokens.digest(credential)
        principal = self.cache.get(key)
        if principal is None:
            principal = await self._verify(credential, key)
            self.cache.put(key, principal)
        return principal

    async def authenticate_certificate(self, names: tuple[str, ...]) -> Principal:
        """The service a verified client certificate proves: the service token
        named like one of the certificate's `names` (URIs, DNS names, CN),
        with its scopes; Unauthenticated when none is, or it was revoked."""
        key = tokens.digest("\0".join(("certificate", *names)))
        principal = self.cache.get(key)
        if principal is None:
            async with self.db.connection() as conn:
                found = await credentials.find_service_token_by_name(conn, names)
            if found is None:
                shown = ", ".join(name[:100] for name in names[:3]) or "no name"
                raise Unauthenticated("UNKNOWN_CERTIFICATE", shown)
            if found.revoke_time is not None:
                raise Unauthenticated("REVOKED", f"service token {found.name!r}")
            principal = Principal("service", found.name, frozenset(found.scopes))
            self.cache.put(key, principal)
        return principal

    async def _verify(self, credential: str, key: bytes) -> Principal:
        if credential.startswith(tokens.SERVICE_PREFIX):
            return await self._service(credential, key)
        if credential.startswith(tokens.AGENT_PREFIX):
            return await self._agent(credential, key)
        if credential.count(".") == 2:
            return await self._user(credential)
        raise Unauthenticated("MALFORMED", "neither a token of this server nor a JWT")

    async def _service(self, credential: str, key: bytes) -> Principal:
        found = await self._stored(credential, key, tokens.SERVICE_PREFIX, credentials.find_service_token)
        return Principal("service", found.name, frozenset(found.scopes))

    async def _agent(self, credential: str, key: bytes) -> Principal:
        found = await self._stored(credential, key, tokens.AGENT_PREFIX, credentials.find_agent_token)
        expire_time = found.expire_time.timestamp()
        if expire_time <= self.clock():
            raise Unauthenticated("EXPIRED")
        return Principal("agent", str(found.id), build_id=found.build_id, expire_time=expire_time)

    async def _stored(
        self, credential: str, key: bytes, prefix: str, find: Callable[[credentials.Conn, bytes], Awaitable[T | None]]
    ) -> T:
        """The live row of a token of this server, looked up by its digest."""
        problem = tokens.shape_problem(credential, prefix)
        if problem is not None:
            raise Unauthenticated("MALFORMED", problem)
        async with self.db.connection() as conn:
            found = await find(conn, key)
        if found is None:
            raise Unauthenticated("UNKNOWN_TOKEN")
        if found.revoke_time is not None:
            raise Unauthenticated("REVOKED")
        return found

    async def _user(self, credential: str) -> Principal:
        if self.sessions is None:
            raise Unauthenticated(
                "UNSUPPORTED", "user session JWTs need AUTH_JWKS_URL or AUTH_JWT_PUBLIC_KEY_FILE on the server"
            )
        session = await self.sessions.verify(credential)
        async with self.db.connection() as conn:
            user_id = await credentials.user_id_by_clerk_id(conn, session.subject)
        if user_id is None:
            raise Unauthenticated("NO_USER")
        return Principal("user", user_id, expire_time=session.expire_time, subject=session.subject)
