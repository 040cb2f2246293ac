"""The summary table (printed) and docs/benchmarks.md (written)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.env import Machine
from bench.h2 import Load, Result


@dataclass
class Run:
    args: argparse.Namespace
    background: float
    machine: Machine | None = None
    pg_settings: dict[str, str] = field(default_factory=dict)
    statements_available: bool = False
    load: dict[str, float] = field(default_factory=dict)
    builds: int = 0
    users: int = 0
    shape: Load | None = None
    core: Any = None          # bench.core.Figures
    streams: Any = None       # bench.streams.Figures
    minutes: float = 0.0

    def all_errors(self) -> list[str]:
        return [*(self.core.errors if self.core else []), *(self.streams.errors if self.streams else [])]


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def _rps(r: Result) -> str:
    return f"{r.rps:,.0f} req/s (p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms)"


def rows(run: Run) -> list[tuple[str, str, str, str]]:
    """(measure, figure, floor or target measured in the same run, ratio / verdict)"""
    out: list[tuple[str, str, str, str]] = []
    results: dict[str, Result] = run.core.results if run.core else {}
    if "get.server" in results and "get.bare" in results:
        s, b = results["get.server"], results["get.bare"]
        ratio = s.rps / b.rps
        out.append(("GetBuild, server (INFO access log)", _rps(s), f"bare handler {_rps(b)}",
                    f"{ratio:.2f} (target >= 0.80: {_verdict(ratio >= 0.8)})"))
    if "get.server.nolog" in results and "get.bare" in results:
        s, b = results["get.server.nolog"], results["get.bare"]
        out.append(("GetBuild, server (LOG_LEVEL=WARNING)", _rps(s), f"bare handler {_rps(b)}", f"{s.rps / b.rps:.2f}"))
    if "get.fixed" in results:
        f = results["get.fixed"]
        out.append(("GetBuild, bare grpc.aio, prebuilt reply, no database", _rps(f), "(the ceiling of grpc.aio here)", ""))
    if "list.server" in results and "list.bare" in results:
        s, b = results["list.server"], results["list.bare"]
        out.append(("ListBuilds, page of 50, saturated", _rps(s), f"bare handler {_rps(b)}", f"{s.rps / b.rps:.2f}"))
    if "list.server.paced" in results:
        s = results["list.server.paced"]
        b = results.get("list.bare.paced")
        offered = f"{s.rps:,.0f} req/s offered"
        out.append((f"ListBuilds, page of 50, paced ({offered}), {run.builds:,} builds",
                    f"p50 {s.p50_ms:.1f} ms, p99 {s.p99_ms:.1f} ms",
                    "target p99 < 20 ms" + (f"; bare handler p99 {b.p99_ms:.1f} ms" if b else ""),
                    _verdict(s.p99_ms < 20)))
    if "create.server" in results and "create.bare" in results:
        s, b = results["create.server"], results["create.bare"]
        out.append(("CreateBuild", _rps(s), f"bare handler {_rps(b)}", f"{s.rps / b.rps:.2f}"))
    v = run.streams.values if run.streams else {}
    if "ingest.one" in v:
        ratio = v["ingest.one"] / v["ingest.copy"]
        out.append((f"AppendBuildLogs, batches of {v['ingest.batch']}, 1 appender", f"{v['ingest.one']:,.0f} lines/s",
                    f"raw COPY, 1 commit per batch: {v['ingest.copy']:,.0f} lines/s",
                    f"{ratio:.2f} (target >= 0.30: {_verdict(ratio >= 0.3)})"))
        out.append((f"AppendBuildLogs, {v['ingest.appenders']} appenders on {v['ingest.appenders']} builds",
                    f"{v['ingest.several']:,.0f} lines/s",
                    f"raw COPY, 1 commit per batch: {v['ingest.copy']:,.0f}; all in 1 transaction: {v['ingest.copy_bulk']:,.0f} lines/s",
                    f"{v['ingest.several'] / v['ingest.copy']:.2f} / {v['ingest.several'] / v['ingest.copy_bulk']:.2f}"))
    if "latency.p99" in v:
        ok = v["latency.p99"] <= 50 and v["latency.lost"] == 0 and v["latency.duplicates"] == 0
        out.append((f"Append-to-follower, {v['latency.followers']} followers on 2 replicas, "
                    f"{v['latency.rate']:,.0f} lines/s appended (5,000 asked)",
                    f"p50 {v['latency.p50']:.1f} ms, p99 {v['latency.p99']:.1f} ms; lost {v['latency.lost']}, "
                    f"duplicated {v['latency.duplicates']}",
                    "target p99 <= 50 ms at 5,000 lines/s, nothing lost or repeated",
                    _verdict(ok and v["latency.rate"] >= 4750)))
    if "memory.peak" in v:
        out.append((f"Server memory, {v['memory.followers']} idle followers", f"{v['memory.peak']:.0f} MB RSS "
                    f"(idle server {v['memory.idle']:.0f} MB)", "target <= 100 MB per process",
                    _verdict(v["memory.peak"] <= 100)))
    if "statements.1" in v and "statements.1000" in v:
        one, many = v["statements.1"], v["statements.1000"]
        out.append(("Statements per appended batch", f"{one:.2f} with 1 follower, {many:.2f} with 1,000",
                    "target: the same number", _verdict(abs(one - many) < 0.5)))
    return out


def table(run: Run) -> str:
    lines = ["| Measure | Figure | Floor / target (same run) | Ratio / verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(run)]
    return "\n".join(lines)


def _cpu_lines(run: Run) -> list[str]:
    out = []
    if run.core:
        for key, result in run.core.results.items():
            if result.cpu is not None:
                out.append(f"- `{key}`: {result.cpu.text()}")
    if run.streams and "latency.cpu" in run.streams.values:
        out.append(f"- `latency`: {run.streams.values['latency.cpu'].text()}")
    return out


def write(run: Run, path: str) -> None:
    assert run.machine is not None
    md = [
        "# Benchmarks",
        "",
        "`make bench` measures the service under a real load generator and prints every figure",
        "beside its floor or target **measured in the same run, on the same machine**. This file",
        "is written by `make bench` (a full run; `--write-docs` for a subset) and then annotated",
        "below the generated part. Tests never assert timings; this is where timings live.",
        "",
        "## Last run",
        "",
        *run.machine.lines(),
        f"- PostgreSQL settings: {', '.join(f'{k}={v}' for k, v in run.pg_settings.items())} "
        "(defaults of a fresh cluster: durable commits)",
        f"- other load on the machine before the bench started: {run.background:.0f}% of one core "
        "(see the CPU breakdown below)",
        f"- data: {run.builds:,} builds of {run.users:,} users (3 projects each), loaded in "
        f"{sum(run.load.values()):.0f} s ({', '.join(f'{k} {v:.1f}' for k, v in run.load.items())})",
        f"- whole run: {run.minutes:.1f} minutes",
    ]
    if run.shape:
        md.append(f"- h2load: {run.shape.connections} connections x {run.shape.streams} streams, one thread, "
                  f"{run.shape.warmup:g} s warm-up, {run.shape.duration:g} s measured per figure")
    md += ["", table(run), ""]
    errors = run.all_errors()
    md += ["### Errors and checks", ""]
    md += [f"- ERROR: {e}" for e in errors] or ["- none: every sample call answered OK, h2load counted no failed "
                                                 "request, every follower got every line exactly once and in order"]
    if run.core:
        md += [f"- {n}" for n in run.core.notes]
    md += ["", "### Where the CPU went (% of one core; the machine has "
           f"{run.machine.cores * 100}%)", "", *_cpu_lines(run), ""]
    if run.core and run.core.plan:
        md += ["### The ListBuilds page query on the loaded table", "", "```", run.core.plan, "```", ""]
    v = run.streams.values if run.streams else {}
    for count in (1, 1000):
        key = f"statements.{count}.rows"
        if key in v:
            md += [f"### Statements during 100 appended batches, {count} follower(s) "
                   f"(server RSS {v[f'statements.{count}.rss']:.0f} MB)", "",
                   "| calls | statement |", "|---:|---|"]
            md += [f"| {calls} | `{query.replace('|', '/')}` |" for query, calls in v[key]]
            md.append("")
    if "latency.p99" in v:
        md += ["### Latency run details", "",
               f"- appended {v['latency.rate']:,.0f} lines/s for {v['latency.seconds']} s in batches of 50 "
               f"({v['latency.late']} batches went out more than 50 ms behind schedule: the appender waits for each append)",
               f"- AppendBuildLogs round trip p50 {v['latency.append_p50']:.1f} ms, p99 {v['latency.append_p99']:.1f} ms",
               f"- {v['latency.samples']:,} line deliveries measured, max {v['latency.max']:.1f} ms", ""]
    notes = Path(__file__).with_name("NOTES.md")
    if notes.exists():
        md += [notes.read_text().rstrip(), ""]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(md))
