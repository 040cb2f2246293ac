"""Who is calling, and what they may touch: the authorization rules, pure.

Three kinds of principal (server.auth proves which one a credential is):
- a service: a token with scopes; `read` < `write` < `admin`, each scope
  including the weaker ones. It acts on every resource;
- a user: a session JWT of the identity provider. It acts only on what it
  owns: itself, its projects, builds, chat sessions and app specs, and the
  logs and events of its builds;
- an agent: a token minted for one build. It acts only on that build.

Each RPC declares a `Rule` (the `(buildplatform.v1.access)` method option
of the contract, read by server.core.calls): the scope a service needs, and
whether users and agents may call it at all. `admit` decides that before
the call runs. What a user or an agent may then touch is decided by
`require_owner` and `own_user`, with the owner of the resource (`Owner`)
that the core reads. A principal refused either way gets PermissionDenied,
whether or not the resource exists (AIP-211: a missing resource and one of
somebody else look the same), and nothing is written.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from server.domain.errors import InvalidArgument, PermissionDenied

Kind = Literal["user", "agent", "service"]


class Scope(enum.IntEnum):
    """The scopes of service tokens, weakest first; a scope includes the weaker ones."""

    READ = 1
    WRITE = 2
    ADMIN = 3


SCOPES = tuple(scope.name.lower() for scope in Scope)


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
    - service: `id` is the service token's name (or the client
      certificate's identity), `scopes` its scopes.
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
        """`kind:id`, for the access log and messages."""
        return f"{self.kind}:{self.id}"

    def __str__(self) -> str:
        return self.label()

    @property
    def scope(self) -> Scope | None:
        """The strongest scope of a service, None for users and agents."""
        held = [Scope[name.upper()] for name in self.scopes if name in SCOPES]
        return max(held) if held else None


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may call one RPC: a service with at least `scope`, and users or
    agents when `user` or `agent` says so."""

    scope: Scope
    user: bool = False
    agent: bool = False

    def callers(self) -> str:
        """Who may call, in words (for refusals and the docs)."""
        who = [f"a service token with scope {self.scope.name.lower()}"]
        if self.user:
            who.append("a user")
        if self.agent:
            who.append("the build's agent")
        return who[0] if len(who) == 1 else ", ".join(who[:-1]) + " or " + who[-1]


def admit(principal: Principal, rule: Rule, method: str) -> None:
    """PermissionDenied unless `principal` may call `method` at all."""
    if principal.kind == "service":
        held = principal.scope
        if held is not None and held >= rule.scope:
            return
    elif (principal.kind == "user" and rule.user) or (principal.kind == "agent" and rule.agent):
        return
    raise PermissionDenied(
        f"{principal.label()} may not call {method}: it needs {rule.callers()}",
        permission=f"{method} ({rule.scope.name.lower()})",
    )


@dataclass(frozen=True, slots=True)
class Owner:
    """Who owns a resource: the user, and for a build and its logs and
    events, the build (whose agent may touch it)."""

    user_id: str
    build_id: str = ""


def may_touch(principal: Principal, owner: Owner | None) -> bool:
    """Whether `principal` may act on a resource of `owner` (None: there is no
    such resource, which only a service may learn)."""
    if principal.kind == "service":
        return True
    if owner is None:
        return False
    if principal.kind == "user":
        return owner.user_id == principal.id
    return bool(owner.build_id) and owner.build_id == principal.build_id


def require_owner(principal: Principal, owner: Owner | None, resource: str, key: str) -> None:
    """PermissionDenied unless `principal` may act on `resource` `key` of `owner`."""
    if not may_touch(principal, owner):
        raise PermissionDenied(
            f"{principal.label()} has no access to {resource} {key!r}, or it does not exist",
            permission=resource,
        )


def own_user(principal: Principal, user_id: str, field_name: str) -> str:
    """The user a request acts for: `user_id` as given for services; for a
    user, its own id (when `user_id` is empty, or names it), and
    PermissionDenied when `user_id` names somebody else."""
    if principal.kind == "service":
        return user_id
    if principal.kind == "user" and user_id in ("", principal.id):
        return principal.id
    raise PermissionDenied(
        f"{principal.label()} may act only for itself: {field_name} must be empty or its own id",
        permission=field_name,
    )


def reviewer(principal: Principal, given: str, field_name: str = "reviewer") -> str:
    """Who is recorded as the reviewer: a user is recorded as itself, never
    as a name the request carries; a service names the person (and the
    core checks that it did)."""
    if principal.kind != "user":
        return given
    if given not in ("", principal.id):
        raise InvalidArgument.one(field_name, "is set by the server to the calling user's id: leave it empty")
    return principal.id
