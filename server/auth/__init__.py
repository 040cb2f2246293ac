"""Authentication: who is calling. No grpc here; a transport calls it.

    authenticator = Authenticator.from_settings(settings, db)
    principal = await authenticator.authenticate(metadata.get("authorization"))

`authenticate` returns a Principal (user, agent or service) or raises
server.domain.errors.Unauthenticated, whose `reason` says which problem the
credential has. What a principal may do (authorization) is decided elsewhere.

  authenticator.py   authenticate(): the header to a principal, with the cache
  sessions.py        user session JWTs: JWKS or PEM keys, the verifier
  cache.py           the bounded TTL cache of verified credentials
  bootstrap.py       the first admin token, the page-token key
  cli.py             `python -m server tokens ...`
The form and digest of this server's tokens are in server.domain.tokens,
their rows in server.store.credentials.
"""

from __future__ import annotations

from server.auth.authenticator import Authenticator
from server.domain.access import SCOPES, Principal

__all__ = ["SCOPES", "Authenticator", "Principal"]
