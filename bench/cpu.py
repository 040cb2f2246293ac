"""Where the machine's CPU went during a measurement: the whole machine
(/proc/stat), the bench's PostgreSQL (the postmaster's children) and the
processes under test. What is left is the load generator, the bench itself
and anything else running on the machine, reported so a noisy neighbour
shows in the figures instead of hiding in them."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
_postmaster = 0


def set_postmaster(pid: int) -> None:
    global _postmaster
    _postmaster = pid


def _machine() -> tuple[float, float]:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / TICK, sum(fields) / TICK


def _proc(pid: int) -> tuple[int, float]:
    """(parent pid, CPU seconds) of a process, or (0, 0) when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0, 0.0
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def postgres_seconds() -> float:
    """CPU seconds of the bench's PostgreSQL: the postmaster and its children
    (backends that already exited are not counted)."""
    if not _postmaster:
        return 0.0
    total = _proc(_postmaster)[1]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent, seconds = _proc(int(entry))
            if parent == _postmaster:
                total += seconds
    return total


@dataclass
class Usage:
    machine: float      # % of one core, all processes (200 = both cores of 2)
    postgres: float
    tested: dict[str, float]

    def text(self) -> str:
        tested = ", ".join(f"{k} {v:.0f}%" for k, v in self.tested.items())
        rest = self.machine - self.postgres - sum(self.tested.values())
        return f"CPU: machine {self.machine:.0f}%, PostgreSQL {self.postgres:.0f}%, {tested}, rest {rest:.0f}%"


class Meter:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self.machine = _machine()
        self.postgres = postgres_seconds()
        self.tested = {name: _proc(pid)[1] for name, pid in pids.items()}

    def stop(self) -> Usage:
        elapsed = time.monotonic() - self.started
        busy, _ = _machine()
        return Usage(
            machine=(busy - self.machine[0]) / elapsed * 100,
            postgres=(postgres_seconds() - self.postgres) / elapsed * 100,
            tested={n: (_proc(p)[1] - self.tested[n]) / elapsed * 100 for n, p in self.pids.items()},
        )
