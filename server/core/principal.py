"""Who is calling: passed to every core function, so that authorization can
be decided there, once, for every transport.

Authentication does not exist yet: every adapter passes ANONYMOUS_ADMIN, the
rights any caller that reaches the port has today (everything). The next
step (issue 8, sections 2-3) adds the user, build-agent and service kinds
and checks them in the core functions, which already receive the principal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class PrincipalKind(enum.StrEnum):
    ANONYMOUS = "anonymous"
    USER = "user"
    AGENT = "agent"
    SERVICE = "service"


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    kind: PrincipalKind
    # The User id, the build id of an agent token, or the service token's name.
    id: str = ""
    scopes: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.id}" if self.id else self.kind.value


# What an unauthenticated caller may do until authentication exists: anything.
ANONYMOUS_ADMIN = Principal(kind=PrincipalKind.ANONYMOUS, scopes=frozenset({"admin"}))
