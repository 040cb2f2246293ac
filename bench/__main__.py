"""python -m bench: run the benches, print each figure beside its floor or
target measured in the same run, and write docs/benchmarks.md.

    make bench                                   everything (about 30 minutes on 2 cores)
    make bench BENCH_ARGS="--only get,list"      a subset; docs are not rewritten
    make bench BENCH_ARGS="--duration 5"         shorter h2load runs

Benches: get, list, create (issue 2; need the 1,000,000-build load),
ingest and statements (issue 3); delivery and idle (issue 7: live delivery
and idle followers beside a bare grpc.aio fan-out, bench.delivery); filters
and rings (issue 7: filtered reads on a 1,000,000-line build, RSS with big
lines, bench.feeds); http (issue 9: GetBuild and StreamBuildLogs over
Connect and gRPC-Web beside gRPC on the same server, bench.connect); archive
(issue 14: the archive codec's throughput and ratio on realistic build
output beside plain zstd of the same bytes, bench.archive); masking (issue
15: appends with 0, 10 and 200 secrets registered against no masking,
bench.masking); download (issue 14: GET /builds/{id}/logs.txt of a
1,000,000-line log, bytes/s and server RSS, beside COPY out of
PostgreSQL, bench.download); search (issue 15: SearchBuildLogs on a
1,000,000-line build, hot and archived, beside PostgreSQL and an
in-process scan, bench.search); scale (issue 16: appends/s and commits/s
at 1 to 1,000 builds appending at once, NOTIFY in the commit against the
coalescing notifier against no notification, and the wake-up delay on
another replica, bench.scale); lifecycle (issue 14: tail and catch-up of a
1,000,000-line archived build beside the same reads hot, appends while the
archiver works beside the archiver off, hot table bytes after a simulated
month beside the live window alone, bench.lifecycle).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from bench import env, report
from bench.h2 import Load

CORE = ("get", "list", "create", "workers")
STREAMS = ("ingest", "statements", "delivery", "idle", "filters", "rings", "http", "archive", "masking",
           "download", "search", "scale", "lifecycle")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(CORE + STREAMS),
                        help=f"comma-separated subset of: {', '.join(CORE + STREAMS)}")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per h2load run (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="h2load warm-up seconds per run (2)")
    parser.add_argument("--connections", type=int, default=16, help="h2load connections (16)")
    parser.add_argument("--streams", type=int, default=8, help="h2load concurrent streams per connection (8)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="GetBuild server/bare pairs, alternating; the target is judged on the median ratio (3)")
    parser.add_argument("--builds", type=int, default=1_000_000, help="builds loaded for get/list/create (1,000,000)")
    parser.add_argument("--users", type=int, default=10_000, help="users owning them (10,000)")
    parser.add_argument("--docs", default=str(env.ROOT / "docs" / "benchmarks.md"),
                        help="where to write the report (written only when every bench ran, or with --write-docs)")
    parser.add_argument("--write-docs", action="store_true", help="write the report even for a subset")
    parser.add_argument("--keep-database", action="store_true", help="keep the bench database afterwards")
    args = parser.parse_args()
    args.selected = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = args.selected - set(CORE + STREAMS)
    if unknown:
        parser.error(f"unknown bench(es): {', '.join(sorted(unknown))}; choose from {', '.join(CORE + STREAMS)}")
    return args


def main() -> int:
    args = parse_args()
    began = time.monotonic()
    core_wanted = bool(args.selected & set(CORE))
    h2load = env.ensure_h2load() if core_wanted else ""
    background = env.background_cpu()
    print(f"machine busy before the bench starts (other processes): {background:.0f}% of one core", flush=True)
    pg = env.Postgres()
    pg.start()
    run = report.Run(args=args, background=background, revision=env.revision())
    print(f"measuring {run.revision}", flush=True)
    failed = False
    try:
        from server import migrate

        migrate.upgrade(pg.url)
        from bench import load

        users, builds = (args.users, args.builds) if core_wanted else (100, 1000)
        print(f"loading {builds:,} builds of {users:,} users ...", flush=True)
        run.load = load.load(pg.url, users=users, builds=builds)
        run.builds, run.users = builds, users
        print("  " + ", ".join(f"{k} {v:.1f}" for k, v in run.load.items()), flush=True)
        run.machine = env.machine(pg.url)
        run.pg_settings = pg.settings()
        run.statements_available = pg.has_statements
        for line in run.machine.lines():
            print(line, flush=True)
        if core_wanted:
            from bench import core

            shape = Load(args.connections, args.streams, args.duration, args.warmup)
            run.shape = shape
            run.core = core.run(pg.url, h2load, shape, args.selected, builds=builds, rounds=args.rounds)
        if args.selected & set(STREAMS):
            from bench import (
                archive,
                connect,
                delivery,
                download,
                feeds,
                lifecycle,
                masking,
                scale,
                search,
                streams,
            )

            run.streams = streams.Figures()
            for name in STREAMS:
                if name not in args.selected:
                    continue
                if name == "statements" and not pg.has_statements:
                    run.streams.errors.append("statements: pg_stat_statements is not preloaded on BENCH_DATABASE_URL's server; skipped")
                    continue
                print(f"{name}:", flush=True)
                try:
                    module = next(m for m in (feeds, delivery, connect, download, streams, archive, masking, search, scale,
                                            lifecycle)
                                  if hasattr(m, name))
                    module.__dict__[name](pg.url, run.streams)
                except Exception as error:  # report the others even if one bench breaks
                    failed = True
                    traceback.print_exc()
                    run.streams.errors.append(f"{name}: {type(error).__name__}: {error}")
    finally:
        pg.stop(keep=args.keep_database)
    run.minutes = (time.monotonic() - began) / 60
    table = report.table(run)
    print("\n" + table, flush=True)
    for problem in run.all_errors():
        print(f"ERROR: {problem}", file=sys.stderr, flush=True)
    if args.selected == set(CORE + STREAMS) or args.write_docs:
        report.write(run, args.docs)
        print(f"\nwrote {args.docs}", flush=True)
    else:
        print("\n(a subset ran: docs/benchmarks.md left as it was; add --write-docs to overwrite it)", flush=True)
    return 1 if failed or run.all_errors() else 0


if __name__ == "__main__":
    sys.exit(main())
