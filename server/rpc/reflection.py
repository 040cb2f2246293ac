"""Server reflection over the generated descriptors, methods included.

The upb descriptor pool that protobuf uses by default resolves messages,
enums, fields and services, but not methods: `grpcurl describe
pkg.Service.Method` asks for the file containing the method symbol and got
"Symbol not found". This pool answers such a lookup with the service's file.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection


class MethodAwarePool:
    """The default pool, with method names resolvable to their file."""

    def __init__(self, pool: Any = None) -> None:
        self._pool = pool if pool is not None else descriptor_pool.Default()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, name: str) -> Any:  # the pool's API, by name
        try:
            return self._pool.FindFileContainingSymbol(name)
        except KeyError:
            service_name, _, method = name.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                service = None
            if service is None or method not in service.methods_by_name:
                raise
            return service.file


def enable(service_names: list[str], server: Any) -> None:
    reflection.enable_server_reflection(service_names, server, pool=MethodAwarePool())
