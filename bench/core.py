"""Issue 2: GetBuild, CreateBuild and ListBuilds (a page of 50) under h2load,
each beside the bare handler (bench.bare) doing the same SQL in the same run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg
from buildplatform.v1 import build_pb2

from bench import cpu, h2, load, procs
from bench.h2 import Load, Result

SERVICE = "/buildplatform.v1.BuildService/"


@dataclass
class Figures:
    results: dict[str, Result] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plan: str = ""


BUILDS = [1_000_000]  # set by run(): the number of builds loaded
PACED_RPS = 128    # ListBuilds paced: p99 under 20 ms at this rate (issue 16, section 4)


def requests() -> dict[str, tuple[str, Any, Any]]:
    """name -> (method, request, response type); ids are the loader's."""
    user, project = load.uid("u", 1), load.uid("p", 1)   # project 1 belongs to user 1
    return {
        "get": ("GetBuild", build_pb2.GetBuildRequest(id=load.uid("b", BUILDS[0] // 2 + 7)), build_pb2.GetBuildResponse),
        "list": (
            "ListBuilds",
            build_pb2.ListBuildsRequest(user_id=load.uid("u", 4242), page_size=50),
            build_pb2.ListBuildsResponse,
        ),
        "create": (
            "CreateBuild",
            build_pb2.CreateBuildRequest(
                build=build_pb2.Build(
                    user_id=user, project_id=project,
                    app_spec="# Todo app\n" + "Users can add, edit and tick off todos. " * 12,
                )
            ),
            build_pb2.CreateBuildResponse,
        ),
    }


def _check(figures: Figures, who: str, proc: procs.Proc, name: str) -> Any:
    method, message, reply_type = requests()[name]
    code, reply = h2.sample_call(proc.address, SERVICE + method, message, reply_type, proc.token)
    if code != grpc.StatusCode.OK:
        figures.errors.append(f"{who} {method}: sample call answered {code.name}: {reply}")
        return None
    if name == "list" and len(reply.builds) != 50:
        figures.errors.append(f"{who} ListBuilds: sample page has {len(reply.builds)} builds, not 50")
    return reply


def _drive(figures: Figures, h2load: str, key: str, who: str, proc: procs.Proc, name: str, shape: Load) -> Result:
    method, message, _ = requests()[name]
    before = _check(figures, who, proc, name)
    meter = cpu.Meter({who: proc.pid})
    result = h2.run(h2load, key, proc.address, SERVICE + method, message, shape, proc.token)
    result.cpu = meter.stop()
    after = _check(figures, who, proc, name)
    if before is None or after is None:
        result.failed += 1
    if result.failed:
        figures.errors.append(f"{key}: h2load counted {result.failed} failed requests")
    figures.results[key] = result
    pace = f" (paced: {shape.rps_per_connection * shape.connections:.0f} req/s offered)" if shape.rps_per_connection else ""
    print(f"  {key:<26} {result.row()}{pace}  [{result.cpu.text()}]", flush=True)
    return result


def explain_list(url: str) -> str:
    """The plan of the ListBuilds page query for a user, with 1,000,000 rows."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT * FROM builds WHERE user_id = %s "
            "ORDER BY create_time DESC, id DESC LIMIT 51",
            (load.uid("u", 777),),
        ).fetchall()
    return "\n".join(str(r[0]) for r in rows)


def run(url: str, h2load: str, shape: Load, only: set[str], *, builds: int, rounds: int = 3) -> Figures:
    BUILDS[0] = builds
    figures = Figures()
    figures.plan = explain_list(url)
    get_id = requests()["get"][1].id
    names = [n for n in ("get", "list", "create") if n in only]
    server = procs.server("server-info", url)
    bare = procs.Proc("bare", ["-m", "bench.bare", "--database-url", url], {}, server.token).wait_listening()
    try:
        # Same work: the bare handler's replies must equal the server's.
        for name in ("get", "list"):
            if name in names:
                mine, theirs = _check(figures, "server", server, name), _check(figures, "bare", bare, name)
                if mine is not None and theirs is not None and name == "list":
                    # Page tokens are signed with each process's own key (the
                    # server's lives in its database): both must have one, and
                    # the pages must be the same.
                    if not (mine.next_page_token and theirs.next_page_token):
                        figures.errors.append("a ListBuilds sample page has no next_page_token")
                    mine.next_page_token = theirs.next_page_token = ""
                if mine is not None and theirs is not None and mine != theirs:
                    figures.errors.append(f"bare {name} reply differs from the server's")
        print(f"GetBuild / ListBuilds / CreateBuild, h2load -c{shape.connections} -m{shape.streams}, "
              f"{shape.warmup:g} s warm-up + {shape.duration:g} s", flush=True)
        # Server and floor alternate per method, so neither gets a warmer cache.
        for name in names:
            _drive(figures, h2load, f"{name}.server", "server", server, name, shape)
            _drive(figures, h2load, f"{name}.bare", "bare", bare, name, shape)
            if name == "get":
                # The 0.8 target is a ratio of two noisy figures: measure the
                # pair again (alternating) and judge on the median ratio.
                for again in range(2, rounds + 1):
                    _drive(figures, h2load, f"get.server.{again}", "server", server, name, shape)
                    _drive(figures, h2load, f"get.bare.{again}", "bare", bare, name, shape)
            if name == "list":
                # The latency target, away from saturation: at the 128 req/s
                # issue 16 names (PACED_RPS), and one request at a time.
                # h2load starts one pacing timer per connection, all at once:
                # 16 connections at 8 req/s each would send bursts of 16
                # every 125 ms, and the last of a burst waits for the 15
                # before it (p50 18 ms for the bare handler itself). One
                # connection paced at the whole rate sends a request every
                # 7.8 ms, up to `streams` at once: arrivals a service meets.
                paced = Load(1, shape.streams, shape.duration, shape.warmup, rps_per_connection=PACED_RPS)
                _drive(figures, h2load, "list.server.paced", "server", server, name, paced)
                _drive(figures, h2load, "list.bare.paced", "bare", bare, name, paced)
                single = Load(1, 1, shape.duration, shape.warmup)
                _drive(figures, h2load, "list.server.single", "server", server, name, single)
                _drive(figures, h2load, "list.bare.single", "bare", bare, name, single)
        server.stop()
        _codes(figures, server, len(figures.results))
        if "get" in names:
            quiet = procs.server("server-warning", url, LOG_LEVEL="WARNING")
            try:
                _drive(figures, h2load, "get.server.nolog", "server", quiet, "get", shape)
                _drive(figures, h2load, "get.bare.again", "bare", bare, "get", shape)
            finally:
                quiet.stop()
    finally:
        server.stop()
        bare_code = bare.stop()
    if "failures 0" not in bare.log_path.read_text():
        figures.errors.append(f"bare handler reported failures (exit {bare_code}): {bare.log_path.read_text()[-500:]}")
    if "workers" in only:
        _workers(figures, url, h2load, shape, bare_token=bare.token)
    if "get" in names:
        fixed = procs.Proc("bare-fixed", ["-m", "bench.bare", "--database-url", url, "--fixed", get_id], {},
                           bare.token).wait_listening()
        try:
            _drive(figures, h2load, "get.fixed", "bare", fixed, "get", shape)
        finally:
            fixed.stop()
    return figures


def _workers(figures: Figures, url: str, h2load: str, shape: Load, *, bare_token: str) -> None:
    """GetBuild and ListBuilds with WORKERS=1 and WORKERS=2 (one port, two
    processes), beside the bare handler, measured in turn. The CPU column
    counts the supervisor only (its workers are its children)."""
    print("WORKERS: GetBuild and ListBuilds with 1 and 2 workers, beside the bare handler", flush=True)
    bare = procs.Proc("bare-w", ["-m", "bench.bare", "--database-url", url], {}, bare_token).wait_listening()
    try:
        for workers in (1, 2):
            server = procs.server(f"server-workers{workers}", url, WORKERS=str(workers))
            try:
                for name in ("get", "list"):
                    _drive(figures, h2load, f"{name}.workers{workers}", "server", server, name, shape)
            finally:
                server.stop()
        for name in ("get", "list"):
            _drive(figures, h2load, f"{name}.workers.bare", "bare", bare, name, shape)
    finally:
        bare.stop()


def _codes(figures: Figures, server: procs.Proc, runs: int) -> None:
    """Status codes from the access log. h2load stops at the end of its window
    with up to connections x streams requests in flight, which the server logs
    as CANCELLED: those are the generator hanging up, not failures."""
    codes = procs.access_codes(server)
    bad = {code: n for code, n in codes.items() if code != "OK"}
    figures.notes.append(f"server access log (INFO runs): {sum(codes.values()):,} RPCs, non-OK: {bad or 'none'}")
    cut = bad.pop("CANCELLED", 0)
    if cut > runs * 16 * 8:
        bad["CANCELLED"] = cut
    elif cut:
        figures.notes.append(f"{cut} CANCELLED: requests in flight when h2load hung up at the end of a run")
    if bad:
        figures.errors.append(f"server answered non-OK statuses: {bad}")
