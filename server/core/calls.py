"""The RPCs of the contract, bound to their core functions and their access rules.

Every transport serves the same `Endpoint`s: method `GetBuild` of a service
is the core function `get_build(deps, principal, request)` of its module (a
server stream returns an async iterator), and its `Rule` is the
`(buildplatform.v1.access)` option the contract declares on the method. A
method without its function or without its option fails at start-up, so
nothing is served that the contract does not say who may call.

A transport authenticates the caller, calls `endpoint.admit(principal)`
(PermissionDenied for a principal the RPC does not admit at all), then the
function, which decides what that principal may touch (server.domain.access).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from buildplatform.v1 import access_pb2
from google.protobuf.descriptor import MethodDescriptor

from server.domain import access
from server.domain.access import Principal, Rule, Scope


def core_function(module: ModuleType, method: MethodDescriptor) -> Callable[..., Any]:
    """The core function serving `method`: its name in snake_case."""
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", method.name).lower()
    function = getattr(module, name, None)
    if function is None:
        raise LookupError(f"{module.__name__} has no {name}() for {method.full_name}")
    return function  # type: ignore[no-any-return]


def rule_of(method: MethodDescriptor) -> Rule:
    """The access rule the contract declares on `method`."""
    options = method.GetOptions()
    declared = options.Extensions[access_pb2.access] if options.HasExtension(access_pb2.access) else None
    if declared is None or declared.scope == access_pb2.SCOPE_UNSPECIFIED:
        raise LookupError(f"{method.full_name} declares no scope in its (buildplatform.v1.access) option")
    return Rule(Scope(declared.scope), user=declared.user, agent=declared.agent)


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str          # buildplatform.v1.BuildService.GetBuild
    rule: Rule
    function: Callable[..., Any]
    streaming: bool

    def admit(self, principal: Principal) -> None:
        access.admit(principal, self.rule, self.name)

    def call(self, deps: Any, principal: Principal, request: Any) -> Any:
        """The core function's coroutine (unary) or async iterator (stream),
        once `principal` is admitted: PermissionDenied is raised here, before
        any of the function runs."""
        self.admit(principal)
        return self.function(deps, principal, request)


def endpoint(module: ModuleType, method: MethodDescriptor) -> Endpoint:
    return Endpoint(method.full_name, rule_of(method), core_function(module, method), method.server_streaming)
