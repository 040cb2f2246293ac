"""One version for everything this repository publishes (`make version`).

The server, the Python stubs (`buildplatform-api`) and the TypeScript package
(`@buildplatform/api`) carry the same version. The released contract,
contracts/released.binpb, is the FileDescriptorSet of protos/ as of the last
release; `buf breaking` (`make breaking`, part of `make check`) compares the
working tree against it.

    python tools/version.py show                  print the version
    python tools/version.py check                 fail unless every package file carries it
                                                  and CHANGELOG.md has its section
    python tools/version.py bump minor            release: bump (major, minor, patch or X.Y.Z)
                                                  every package file, date the CHANGELOG's
                                                  Unreleased section, record the contract
    python tools/version.py accept-break "why"    record an intended breaking change: rewrite
                                                  the contract baseline and list the break in
                                                  the CHANGELOG; the next bump cannot be a patch
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUF = Path(sys.executable).parent / "buf"  # buf-bin, installed next to the venv's python
CONTRACT = ROOT / "contracts" / "released.binpb"
CHANGELOG = ROOT / "CHANGELOG.md"
PYPROJECTS = [ROOT / "pyproject.toml", ROOT / "generated" / "python" / "pyproject.toml"]
PACKAGE_JSON = ROOT / "generated" / "typescript" / "package.json"
PACKAGE_LOCK = ROOT / "generated" / "typescript" / "package-lock.json"

PYPROJECT_VERSION = re.compile(r'^version = "([^"]+)"$', re.M)
SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
UNRELEASED = "## [Unreleased]"


def versions() -> dict[str, str]:
    """Where the version is written -> the version written there."""
    found: dict[str, str] = {}
    for path in PYPROJECTS:
        match = PYPROJECT_VERSION.search(path.read_text())
        found[str(path.relative_to(ROOT))] = match.group(1) if match else "(none)"
    found[str(PACKAGE_JSON.relative_to(ROOT))] = json.loads(PACKAGE_JSON.read_text())["version"]
    lock = json.loads(PACKAGE_LOCK.read_text())
    found[f"{PACKAGE_LOCK.relative_to(ROOT)}"] = lock["version"]
    found[f"{PACKAGE_LOCK.relative_to(ROOT)} (packages)"] = lock["packages"][""]["version"]
    return found


def current() -> str:
    found = set(versions().values())
    if len(found) != 1:
        sys.exit(f"the packages disagree on the version: {versions()}")
    return found.pop()


def write_version(new: str) -> None:
    for path in PYPROJECTS:
        path.write_text(PYPROJECT_VERSION.sub(f'version = "{new}"', path.read_text(), count=1))
    for path, keys in ((PACKAGE_JSON, [[]]), (PACKAGE_LOCK, [[], ["packages", ""]])):
        data = json.loads(path.read_text())
        for key in keys:
            node = data
            for part in key:
                node = node[part]
            node["version"] = new
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")  # npm's own layout


def next_version(old: str, part: str) -> str:
    if SEMVER.match(part):
        return part
    major, minor, patch = (int(n) for n in SEMVER.match(old).groups())  # type: ignore[union-attr]
    return {
        "major": f"{major + 1}.0.0",
        "minor": f"{major}.{minor + 1}.0",
        "patch": f"{major}.{minor}.{patch + 1}",
    }[part]


def unreleased_section(text: str) -> str:
    if UNRELEASED not in text:
        sys.exit(f"CHANGELOG.md has no '{UNRELEASED}' section")
    return text.split(UNRELEASED, 1)[1].split("\n## ", 1)[0]


def breaking_changes() -> str:
    """buf's list of breaking changes against the released contract; empty when none."""
    result = subprocess.run(
        [str(BUF), "breaking", "protos", "--against", str(CONTRACT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode not in (0, 100):  # 100: breaking changes found
        sys.exit(f"buf breaking failed:\n{result.stdout}{result.stderr}")
    return result.stdout.strip()


def record_contract() -> None:
    CONTRACT.parent.mkdir(exist_ok=True)
    subprocess.run(
        [
            str(BUF),
            "build",
            "protos",
            "--exclude-source-info",
            "--as-file-descriptor-set",
            "-o",
            str(CONTRACT),
        ],
        cwd=ROOT,
        check=True,
    )


def cmd_check() -> None:
    version = current()
    if not re.search(rf"^## \[{re.escape(version)}\]", CHANGELOG.read_text(), re.M):
        sys.exit(f"CHANGELOG.md has no '## [{version}]' section")
    print(f"version {version}: {', '.join(versions())} and CHANGELOG.md agree")


def cmd_bump(part: str, date: str) -> None:
    old = current()
    new = next_version(old, part)
    if tuple(map(int, new.split("."))) <= tuple(map(int, old.split("."))):
        sys.exit(f"{new} is not newer than {old}")
    breaks = breaking_changes()
    if breaks:
        sys.exit(
            f"unrecorded breaking changes against the released contract:\n{breaks}\n"
            "record them first: python tools/version.py accept-break 'why'"
        )
    text = CHANGELOG.read_text()
    section = unreleased_section(text)
    # Semantic versioning: a break needs a new major, or a new minor while 0.x.
    compatible_digits = 1 if old.startswith("0.") else 0
    if (
        "### Breaking" in section
        and new.split(".")[: compatible_digits + 1] == old.split(".")[: compatible_digits + 1]
    ):
        sys.exit(
            f"CHANGELOG.md lists breaking changes since {old}: bump {'minor' if compatible_digits else 'major'}"
        )
    if not section.strip():
        sys.exit("CHANGELOG.md's Unreleased section is empty: say what this release changes")
    CHANGELOG.write_text(text.replace(UNRELEASED, f"{UNRELEASED}\n\n## [{new}] - {date}", 1))
    write_version(new)
    record_contract()
    print(
        f"{old} -> {new}: bumped {', '.join(versions())}, dated CHANGELOG.md, recorded {CONTRACT.relative_to(ROOT)}"
    )
    print(f"next: make generate && make check && make dist, commit, tag v{new}")


def cmd_accept_break(reason: str) -> None:
    breaks = breaking_changes()
    if not breaks:
        sys.exit("buf breaking finds nothing to accept: the contract is compatible")
    text = CHANGELOG.read_text()
    section = unreleased_section(text)
    entry = f"- {reason}\n" + "".join(f"  - `{line}`\n" for line in breaks.splitlines())
    if "### Breaking" in section:
        new_section = section.replace("### Breaking\n\n", f"### Breaking\n\n{entry}", 1)
    else:
        new_section = f"\n\n### Breaking\n\n{entry}\n" + section.lstrip("\n")
    CHANGELOG.write_text(text.replace(UNRELEASED + section, UNRELEASED + new_section, 1))
    record_contract()
    print(f"recorded the break in CHANGELOG.md and rewrote {CONTRACT.relative_to(ROOT)}:\n{breaks}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("show", help="print the version")
    commands.add_parser("check", help="every package file and the CHANGELOG agree on the version")
    bump = commands.add_parser("bump", help="release a new version")
    bump.add_argument("part", help="major, minor, patch or an explicit X.Y.Z")
    bump.add_argument(
        "--date", default=datetime.date.today().isoformat(), help="release date (default: today)"
    )
    accept = commands.add_parser(
        "accept-break", help="record an intended breaking change of the contract"
    )
    accept.add_argument("reason", help="what breaks and why, for the CHANGELOG")
    args = parser.parse_args()
    if args.command == "show":
        print(current())
    elif args.command == "check":
        cmd_check()
    elif args.command == "bump":
        if args.part not in ("major", "minor", "patch") and not SEMVER.match(args.part):
            parser.error("part must be major, minor, patch or X.Y.Z")
        cmd_bump(args.part, args.date)
    else:
        cmd_accept_break(args.reason)


if __name__ == "__main__":
    main()
