"""Who is calling: the principal a credential proves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["user", "agent", "service"]

# The scopes of service tokens, weakest first.
SCOPES = ("read", "write", "admin")


def parse_scopes(raw: str) -> frozenset[str]:
    """`read,write` as a set of scopes; ValueError naming an unknown one."""
    scopes = frozenset(part.strip() for part in raw.split(",") if part.strip())
    if not scopes:
        raise ValueError(f"no scope given: use one or more of {', '.join(SCOPES)}, comma-separated")
    unknown = sorted(scopes.difference(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}: use one or more of {', '.join(SCOPES)}, comma-separated")
    return scopes


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a credential proved.

    - user: `id` is the User's id, `subject` its clerk_id (the JWT's `sub`);
      no scopes: a user's rights come from what it owns.
    - agent: `id` is the agent token's id, `build_id` the one build it serves.
    - service: `id` is the service token's name, `scopes` its scopes.
    `expire_time` (Unix seconds) is when the credential stops being valid,
    None for credentials that do not expire (service tokens).
    """

    kind: Kind
    id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    build_id: str | None = None
    expire_time: float | None = None
    subject: str = ""

    def label(self) -> str:
        """`kind:id`, for the access log."""
        return f"{self.kind}:{self.id}"
