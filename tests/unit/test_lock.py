"""The lock check (`make check-lock`): a dependency declared without relocking
fails CI in one line that says what to run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

FILES = (
    "pyproject.toml",
    "generated/python/pyproject.toml",
    "requirements.lock",
    "requirements-generate.lock",
    "tools/lock.py",
)


def copy(tmp_path: Path) -> Path:
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "tools/lock.py", "check"], cwd=root, capture_output=True, text=True
    )


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_committed_lock_pins_what_pyproject_declares():
    result = check(ROOT)
    assert result.returncode == 0, result.stderr


def test_a_dependency_added_without_relocking_fails_in_one_line_saying_make_lock(tmp_path: Path):
    root = copy(tmp_path)
    edit(root / "pyproject.toml", '    "cuid>=0.4,<0.5",\n', '    "cuid>=0.4,<0.5",\n    "left-pad-for-python>=1.0",\n')
    result = check(root)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "left-pad-for-python>=1.0 is not pinned" in lines[0], result.stderr
    assert "run 'make lock'" in lines[0]


def test_a_range_the_pin_falls_outside_of_or_a_dropped_dependency_fails_too(tmp_path: Path):
    root = copy(tmp_path)
    api = root / "generated/python/pyproject.toml"
    api.write_text(re.sub(r'"grpcio>=[^"]*"', '"grpcio>=99.0,<100"', api.read_text(), count=1))
    edit(root / "pyproject.toml", '    "trustme==1.2.1",\n', "")
    result = check(root)
    assert result.returncode != 0
    assert "grpcio<100,>=99.0 is pinned at" in result.stderr, result.stderr
    assert "trustme is pinned but no longer declared" in result.stderr, result.stderr
