"""The locked dependencies (`make lock`, `make check-lock`).

requirements.lock pins, with the hashes of every file of each pinned release,
all that the server and its dev/test tools run: the root pyproject.toml's
dependencies and extras, and the dependencies of generated/python (the two
local packages are installed beside it with --no-deps). `make` installs it
with `pip install --require-hashes`, so two installs a month apart run the
same code. requirements-generate.lock does the same for the generator (the
root pyproject.toml's `generate` dependency group), which `make generate`
runs in its own environment, .venv/generator: it needs protobuf 6, the
server runs on protobuf 7.

    python tools/lock.py write [--upgrade]   resolve the locks again from the
                                             pyproject.toml files (uv pip compile
                                             --universal --generate-hashes);
                                             pins still allowed are kept unless
                                             --upgrade
    python tools/lock.py check               fail, in one line, unless each lock pins
                                             every declared dependency within its
                                             declared range and nothing that is no
                                             longer declared
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"  # pinned in the dev extra, beside the venv's python
PYPROJECT = ROOT / "pyproject.toml"
API_PYPROJECT = ROOT / "generated" / "python" / "pyproject.toml"
LOCK = ROOT / "requirements.lock"
GENERATE_LOCK = ROOT / "requirements-generate.lock"
GENERATE_GROUP = "generate"
LOCAL = {"buildplatform-server", "buildplatform-api"}  # installed from the tree, never locked
PYTHON = "3.11"  # the oldest Python the server supports: the universal locks hold from it on

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
VIA = re.compile(r"^\s+#\s+(?:via\s+)?(\S.*)$")


def project() -> dict:  # type: ignore[type-arg]
    return tomllib.loads(PYPROJECT.read_text())


def declared() -> list[Requirement]:
    """What requirements.lock must pin: the server's dependencies, all its
    extras, and the dependencies of the generated stubs."""
    root = project()["project"]
    api = tomllib.loads(API_PYPROJECT.read_text())["project"]
    texts = [*root["dependencies"], *api["dependencies"]]
    for extra in root.get("optional-dependencies", {}).values():
        texts += extra
    return [r for r in map(Requirement, texts) if canonicalize_name(r.name) not in LOCAL]


def declared_generator() -> list[Requirement]:
    return [Requirement(r) for r in project()["dependency-groups"][GENERATE_GROUP]]


def uv_compile(args: list[str], output: Path, stdin: str | None, upgrade: bool) -> None:
    subprocess.run(
        [
            str(UV), "pip", "compile", *args,
            "--universal", "--python-version", PYTHON, "--generate-hashes",
            "--custom-compile-command", "make lock", "--quiet",
            *(["--upgrade"] if upgrade else []),
            "--output-file", str(output.relative_to(ROOT)),
        ],
        cwd=ROOT, input=stdin, text=True, check=True,
    )  # fmt: skip


def cmd_write(upgrade: bool) -> None:
    extras = ",".join(sorted(project()["project"].get("optional-dependencies", {})))
    local = f"-e ./{API_PYPROJECT.parent.relative_to(ROOT)}\n-e .[{extras}]\n"
    no_emit = [arg for name in sorted(LOCAL) for arg in ("--no-emit-package", name)]
    uv_compile(["-", *no_emit], LOCK, local, upgrade)
    uv_compile(["--group", f"pyproject.toml:{GENERATE_GROUP}"], GENERATE_LOCK, None, upgrade)


def pins(lock: Path) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """The lock's pinned versions by package, and what each pin is there for
    (uv's `# via` annotations)."""
    versions: dict[str, list[str]] = {}
    via: dict[str, set[str]] = {}
    current = None
    for line in lock.read_text().splitlines():
        pin = PIN.match(line)
        if pin:
            current = canonicalize_name(pin.group(1))
            versions.setdefault(current, []).append(pin.group(2))
            via.setdefault(current, set())
        elif current and (annotation := VIA.match(line)) and annotation.group(1) != "via":
            via[current].add(annotation.group(1).strip())
        elif not line.startswith(" "):
            current = None
    return versions, via


def mismatches(lock: Path, requirements: list[Requirement], roots: set[str]) -> list[str]:
    if not lock.exists():
        return ["missing"]
    versions, via = pins(lock)
    problems = []
    names = set()
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        names.add(name)
        if name not in versions:
            problems.append(f"{req} is not pinned")
        elif not any(req.specifier.contains(v, prereleases=True) for v in versions[name]):
            problems.append(f"{req} is pinned at {', '.join(versions[name])}")
    for name, reasons in sorted(via.items()):
        # Pinned only because a pyproject.toml asked for it, which it no longer does.
        if reasons and reasons <= roots and name not in names:
            problems.append(f"{name} is pinned but no longer declared")
    return problems


def cmd_check() -> None:
    failures = [
        f"{lock.name}: {'; '.join(problems)}"
        for lock, problems in (
            (LOCK, mismatches(LOCK, declared(), LOCAL)),
            (GENERATE_LOCK, mismatches(GENERATE_LOCK, declared_generator(), {f"{project()['project']['name']} (pyproject.toml:{GENERATE_GROUP})"})),
        )
        if problems
    ]  # fmt: skip
    if failures:
        sys.exit(
            f"the locks do not match pyproject.toml ({' | '.join(failures)}): run 'make lock' and commit what it writes"
        )
    print(f"{LOCK.name} and {GENERATE_LOCK.name} pin what pyproject.toml declares")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="resolve the locks again")
    write.add_argument("--upgrade", action="store_true", help="take the newest allowed versions")
    commands.add_parser("check", help="the locks pin what pyproject.toml declares")
    args = parser.parse_args()
    if args.command == "write":
        cmd_write(args.upgrade)
    else:
        cmd_check()


if __name__ == "__main__":
    main()
