"""The architecture, checked: one direction of dependency, every RPC served
by a core function, and database errors translated in one place."""

from __future__ import annotations

import ast
import pathlib
import re

import psycopg
import pytest
from sqlalchemy import exc

from server.app import SERVICES
from server.core.calls import core_function, endpoint, rule_of
from server.domain.access import Scope
from server.domain.errors import Aborted
from server.store.db import translate

SERVER = pathlib.Path(__file__).resolve().parents[2] / "server"


def _imports(package: str) -> set[str]:
    found = set()
    for path in (SERVER / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                if node.module == "server":
                    found.update(f"server.{alias.name}" for alias in node.names)
    return found


# What each package of server/ may import from server/ (besides itself), and
# which outside libraries it must not: transport -> core -> live -> store,
# domain and the leaves (wellknown, telemetry) below everything.
LAYERS: dict[str, tuple[set[str], tuple[str, ...]]] = {
    "domain": (set(), ("grpc", "sqlalchemy", "psycopg", "google", "buildplatform")),
    "telemetry": (set(), ("grpc", "sqlalchemy")),
    "store": ({"domain", "telemetry", "config"}, ("grpc", "connectrpc", "uvicorn", "buildplatform")),
    # The live feed: its records are protobuf, its reads the store's.
    "live": ({"domain", "telemetry", "wellknown", "store", "archive"}, ("grpc", "sqlalchemy", "connectrpc", "uvicorn")),
    # Archived logs: objects, chunks of the live feed's records, the archiver.
    "archive": ({"domain", "telemetry", "config", "store", "live.records"}, ("grpc", "connectrpc", "uvicorn")),
    "auth": ({"domain", "config", "store", "migrate"}, ("grpc", "connectrpc", "uvicorn")),
    # access_table.py prints the wired services' table (server.app) for the docs.
    "core": ({"domain", "telemetry", "wellknown", "live", "store", "app"}, ("grpc", "sqlalchemy", "psycopg")),
    # What both transports share knows neither of them.
    "transport": ({"domain", "telemetry", "store"}, ("grpc", "connectrpc", "uvicorn")),
    "rpc": ({"domain", "telemetry", "store", "auth", "core", "transport"}, ("connectrpc", "uvicorn")),
    "http": ({"domain", "telemetry", "store", "auth", "core", "transport"}, ("grpc", "sqlalchemy", "psycopg")),
}


def test_every_package_has_its_place_in_the_layers():
    packages = {path.parent.name for path in SERVER.glob("*/__init__.py")}
    assert packages <= LAYERS.keys(), f"add {sorted(packages - LAYERS.keys())} to LAYERS"


def _under(name: str, prefixes: set[str] | tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


@pytest.mark.parametrize("package", sorted(name for name in LAYERS if (SERVER / name).is_dir()))
def test_dependencies_run_one_way(package):
    allowed, forbidden = LAYERS[package]
    inside = {f"server.{name}" for name in (allowed | {package})}
    imported = _imports(package)
    upward = {name for name in imported if name.startswith("server.") and not _under(name, inside)}
    assert not upward, f"server/{package} imports {sorted(upward)}"
    outside = {name for name in imported if _under(name, forbidden)}
    assert not outside, f"server/{package} imports {sorted(outside)}"


def test_the_core_never_chooses_a_pool():
    """The store picks its connection; the core calls typed store functions."""
    entry = re.compile(r"\bdb\.(transaction|read|connection|get_by_id)\(")
    for path in (SERVER / "core").glob("*.py"):
        found = entry.search(path.read_text())
        assert found is None, f"{path.name} opens a database unit of work ({found.group(0)})"


def test_every_rpc_of_every_service_has_its_core_function():
    for service, core in SERVICES:
        for method in service.methods:
            assert callable(core_function(core, method)), method.full_name


def test_every_rpc_of_every_service_declares_who_may_call_it():
    """The (buildplatform.v1.access) option is on every method, with a scope,
    and a method without it cannot be served (endpoint() refuses it)."""
    methods = [method for service, _ in SERVICES for method in service.methods]
    assert len(methods) >= 40
    for method in methods:
        rule = rule_of(method)
        assert rule.scope in Scope, method.full_name
    # Reads need read, deleting users needs admin, the rest of the writes write.
    by_name = {method.name: rule_of(method) for method in methods}
    assert by_name["DeleteUser"].scope is Scope.ADMIN
    assert all(rule.scope is Scope.READ for name, rule in by_name.items() if name.startswith(("Get", "List", "Stream", "Watch")))
    assert not by_name["AppendBuildLogs"].user and by_name["AppendBuildLogs"].agent
    assert not by_name["TransitionBuild"].user and not by_name["ListBuilds"].agent


def test_a_method_without_an_access_option_is_not_served():
    from google.protobuf import descriptor_pb2, descriptor_pool

    from server.core import users

    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name="bare.proto", package="bare")
    file.message_type.add(name="Empty")
    service = file.service.add(name="UserService")
    service.method.add(name="GetUser", input_type=".bare.Empty", output_type=".bare.Empty")
    pool.Add(file)
    method = pool.FindMethodByName("bare.UserService.GetUser")
    with pytest.raises(LookupError, match="declares no scope"):
        endpoint(users, method)


@pytest.mark.parametrize("error", [psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected])
def test_serialization_failures_and_deadlocks_are_aborted_on_both_paths(error):
    raw = error("conflict")
    assert isinstance(translate(raw), Aborted)
    wrapped = exc.OperationalError("SELECT 1", {}, raw)
    assert isinstance(translate(wrapped), Aborted)


def test_the_security_docs_table_is_what_the_contract_declares():
    from server.core import access_table

    doc = (SERVER.parent / "docs" / "security.md").read_text()
    shown = doc.split(access_table.START)[1].split(access_table.END)[0].strip()
    assert shown == access_table.table(service for service, _ in SERVICES), (
        "docs/security.md's table differs from the contract: paste `python -m server.core.access_table` into it"
    )
