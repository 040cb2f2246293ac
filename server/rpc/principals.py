"""Who is calling, from the call's metadata: the one place authentication
will plug into the grpc transport (issue 8, section 2). Until then every
call is ANONYMOUS_ADMIN, which is what the server grants any caller today."""

from __future__ import annotations

from typing import Any

from server.core.principal import ANONYMOUS_ADMIN, Principal


def caller(context: Any) -> Principal:
    return ANONYMOUS_ADMIN
