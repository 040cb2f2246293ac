"""One version for everything this repository publishes (`make version`).

The server, the Python stubs (`buildplatform-api`) and the TypeScript package
(`@buildplatform/api`) carry the same version. Work not yet released carries a
development version, X.Y.Z.devN (PEP 440; X.Y.Z-dev.N in the npm files, the
same version in semver), that sorts after the last release and before the
next one, so two different builds never share a released number. The
released contract, contracts/released.binpb, is the FileDescriptorSet of
protos/ as of the last release; `buf breaking` (`make breaking`, part of
`make check`) compares the working tree against it.

    python tools/version.py show                  print the version
    python tools/version.py check                 fail unless every package file carries it,
                                                  a release has its CHANGELOG.md section and
                                                  no unreleased changes, and a development
                                                  version comes after the last release
    python tools/version.py bump minor            release: bump (major, minor or patch of the
                                                  last release, `release` for X.Y.Z of X.Y.Z.devN,
                                                  or X.Y.Z) every package file, date the
                                                  CHANGELOG's Unreleased section, record the
                                                  contract
    python tools/version.py bump dev              start the next version after a release
                                                  (X.Y.Z -> X.Y.Z+1.dev0), or number a new
                                                  development build (X.Y.Z.devN -> .devN+1)
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
DEV = re.compile(r"^(\d+\.\d+\.\d+)\.dev(\d+)$")  # PEP 440, in pyproject.toml
NPM_DEV = re.compile(r"^(\d+\.\d+\.\d+)-dev\.(\d+)$")  # the same version in semver, for npm
RELEASED = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - ", re.M)
UNRELEASED = "## [Unreleased]"


def to_npm(version: str) -> str:
    dev = DEV.match(version)
    return f"{dev.group(1)}-dev.{dev.group(2)}" if dev else version


def from_npm(version: str) -> str:
    dev = NPM_DEV.match(version)
    return f"{dev.group(1)}.dev{dev.group(2)}" if dev else version


def key(version: str) -> tuple[int, ...]:
    """Sort key: a development version comes before its release."""
    dev = DEV.match(version)
    base = dev.group(1) if dev else version
    return (*map(int, base.split(".")), int(dev.group(2)) if dev else 1 << 30)


def last_release(changelog: str) -> str | None:
    found = RELEASED.findall(changelog)
    return max(found, key=key) if found else None


def versions() -> dict[str, str]:
    """Where the version is written -> the version written there."""
    found: dict[str, str] = {}
    for path in PYPROJECTS:
        match = PYPROJECT_VERSION.search(path.read_text())
        found[str(path.relative_to(ROOT))] = match.group(1) if match else "(none)"
    # npm's files spell a development version in semver: X.Y.Z-dev.N.
    found[str(PACKAGE_JSON.relative_to(ROOT))] = from_npm(
        json.loads(PACKAGE_JSON.read_text())["version"]
    )
    lock = json.loads(PACKAGE_LOCK.read_text())
    found[f"{PACKAGE_LOCK.relative_to(ROOT)}"] = from_npm(lock["version"])
    found[f"{PACKAGE_LOCK.relative_to(ROOT)} (packages)"] = from_npm(
        lock["packages"][""]["version"]
    )
    return found


def current() -> str:
    found = set(versions().values())
    if len(found) != 1:
        sys.exit(f"the packages disagree on the version: {versions()}")
    version = found.pop()
    if not (SEMVER.match(version) or DEV.match(version)):
        sys.exit(
            f"version {version} is neither a release X.Y.Z nor a development version X.Y.Z.devN"
        )
    return version


def write_version(new: str) -> None:
    for path in PYPROJECTS:
        path.write_text(PYPROJECT_VERSION.sub(f'version = "{new}"', path.read_text(), count=1))
    for path, keys in ((PACKAGE_JSON, [[]]), (PACKAGE_LOCK, [[], ["packages", ""]])):
        data = json.loads(path.read_text())
        for path_in_file in keys:
            node = data
            for part in path_in_file:
                node = node[part]
            node["version"] = to_npm(new)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")  # npm's own layout


def next_version(last: str, part: str) -> str:
    if SEMVER.match(part):
        return part
    major, minor, patch = (int(n) for n in SEMVER.match(last).groups())  # type: ignore[union-attr]
    return {
        "major": f"{major + 1}.0.0",
        "minor": f"{major}.{minor + 1}.0",
        "patch": f"{major}.{minor}.{patch + 1}",
    }[part]


def next_dev(version: str) -> str:
    dev = DEV.match(version)
    if dev:
        return f"{dev.group(1)}.dev{int(dev.group(2)) + 1}"
    return next_version(version, "patch") + ".dev0"


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
    text = CHANGELOG.read_text()
    last = last_release(text)
    dev = DEV.match(version)
    if dev:
        if last is not None and key(dev.group(1)) <= key(last):
            sys.exit(
                f"development version {version} is not on the way to a release after {last}: "
                "start the next one with make version BUMP=dev"
            )
        state = f"unreleased, after {last}" if last else "unreleased"
    else:
        if not re.search(rf"^## \[{re.escape(version)}\]", text, re.M):
            sys.exit(f"CHANGELOG.md has no '## [{version}]' section")
        if unreleased_section(text).strip():
            sys.exit(
                f"CHANGELOG.md lists unreleased changes, but {version} is released: builds of "
                f"them need a development version: make version BUMP=dev ({next_dev(version)})"
            )
        state = "released"
    print(f"version {version} ({state}): {', '.join(versions())} and CHANGELOG.md agree")


def cmd_bump(part: str, date: str) -> None:
    old = current()
    if part == "dev":
        new = next_dev(old)
        write_version(new)
        print(f"{old} -> {new}: bumped {', '.join(versions())}; builds now carry {new}")
        return
    text = CHANGELOG.read_text()
    last = last_release(text)
    dev = DEV.match(old)
    base = dev.group(1) if dev else old
    if part == "release":
        if not dev:
            sys.exit(f"{old} is released already: say which part to bump (major, minor, patch)")
        new = base
    else:
        new = next_version(last or base, part)
    if last is not None and key(new) <= key(last):
        sys.exit(f"{new} is not newer than the last release, {last}")
    if not dev and key(new) <= key(old):
        sys.exit(f"{new} is not newer than {old}")
    breaks = breaking_changes()
    if breaks:
        sys.exit(
            f"unrecorded breaking changes against the released contract:\n{breaks}\n"
            "record them first: python tools/version.py accept-break 'why'"
        )
    section = unreleased_section(text)
    # Semantic versioning: a break needs a new major, or a new minor while 0.x.
    previous = last or base
    compatible_digits = 1 if previous.startswith("0.") else 0
    if (
        "### Breaking" in section
        and new.split(".")[: compatible_digits + 1] == previous.split(".")[: compatible_digits + 1]
    ):
        sys.exit(
            f"CHANGELOG.md lists breaking changes since {previous}: bump {'minor' if compatible_digits else 'major'}"
        )
    if dev and key(new) < key(base):
        sys.exit(
            f"{new} is older than the development version {old}, whose builds would sort after "
            f"it: release {base} (make version BUMP=release) or a newer version"
        )
    if not section.strip():
        sys.exit("CHANGELOG.md's Unreleased section is empty: say what this release changes")
    CHANGELOG.write_text(text.replace(UNRELEASED, f"{UNRELEASED}\n\n## [{new}] - {date}", 1))
    write_version(new)
    record_contract()
    print(
        f"{old} -> {new}: bumped {', '.join(versions())}, dated CHANGELOG.md, recorded {CONTRACT.relative_to(ROOT)}"
    )
    print(
        f"next: make generate && make check && make dist, commit, tag v{new}; then "
        f"make version BUMP=dev ({next_dev(new)}) and commit, so later builds never carry {new}"
    )


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
    commands.add_parser(
        "check", help="every package file and the CHANGELOG agree on the version, released or not"
    )
    bump = commands.add_parser("bump", help="release a new version, or start the next (dev)")
    bump.add_argument(
        "part", help="major, minor, patch, release (X.Y.Z of X.Y.Z.devN), an explicit X.Y.Z, or dev"
    )
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
        if args.part not in ("major", "minor", "patch", "release", "dev") and not SEMVER.match(
            args.part
        ):
            parser.error("part must be major, minor, patch, release, X.Y.Z or dev")
        cmd_bump(args.part, args.date)
    else:
        cmd_accept_break(args.reason)


if __name__ == "__main__":
    main()
