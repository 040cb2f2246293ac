"""What a principal may touch, with the facts read from the store: the core
functions call these before they read or write (the rules themselves are
pure, in server.domain.access). A service needs no read: its scope was
checked when the call was admitted (server.core.calls)."""

from __future__ import annotations

from server.core.deps import Deps
from server.domain import access
from server.domain.access import Owner, Principal
from server.store import owners
from server.store.owners import Resource


async def require(d: Deps, principal: Principal, resource: Resource, key: str) -> None:
    """PermissionDenied unless `principal` may act on `resource` `key`
    (also when it does not exist, unless the principal is a service)."""
    if principal.kind == "service":
        return
    if principal.kind == "agent" and resource == "build":
        # An agent's build is in its token: no read needed.
        found = Owner("", key) if key == principal.build_id else None
    else:
        found = await owners.owner(d.db, resource, key)
    access.require_owner(principal, found, resource, key)
