"""The table of who may call each RPC, in Markdown, from the contract's
`(buildplatform.v1.access)` options: docs/security.md holds it between
markers, and a test checks it is what the contract says
(`python -m server.core.access_table` prints it)."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.descriptor import ServiceDescriptor

from server.core.calls import rule_of

START = "<!-- access-table:start -->"
END = "<!-- access-table:end -->"

# What a user or an agent may touch when the RPC admits them.
USER_LIMIT = "own"
AGENT_LIMIT = "its build"


def table(services: Iterable[ServiceDescriptor]) -> str:
    lines = [
        "| RPC | service token needs | user | build agent |",
        "|---|---|---|---|",
    ]
    for service in services:
        for method in service.methods:
            rule = rule_of(method)
            lines.append(
                f"| `{service.name}.{method.name}` | `{rule.scope.name.lower()}` "
                f"| {USER_LIMIT if rule.user else '-'} | {AGENT_LIMIT if rule.agent else '-'} |"
            )
    return "\n".join(lines)


def main() -> None:
    from server.app import SERVICES

    print(table(service for service, _ in SERVICES))


if __name__ == "__main__":
    main()
