"""Issue 15: what masking secrets at ingest costs appends (docs/secrets.md).

One server, one appender, batches of 500 log lines (~110 bytes, the ingest
bench's lines) appended with first_sequence to four RUNNING builds:
- no masking: well-known shapes off and no secret registered (the masker
  has nothing to do: a dictionary lookup per append);
- 0 secrets: the shapes on (every build's default);
- 10 and 200 secrets: random 32-character values registered through
  RegisterBuildSecrets (each masks its base64, URL and JSON forms too:
  800 patterns for 200 values), with one line of each batch printing one
  of them (so every batch goes through the masking path, not only the
  filter).
The four alternate, batch by batch, for `rounds` rounds, so that a busy
machine slows them alike; each figure is lines/s over its batches. Goal:
200 secrets cost at most 15% of the throughput without masking.
"""

from __future__ import annotations

import asyncio
import secrets as random
import time

import psycopg
from buildplatform.v1 import build_log_pb2, build_log_pb2_grpc, build_pb2, build_pb2_grpc

from bench import procs
from bench.streams import Figures, entries, new_builds
from tests.support import open_aio_channel

CASES = (("none", 0), ("shapes", 0), ("10", 10), ("200", 200))
LABELS = {"none": "no masking", "shapes": "0 secrets", "10": "10 secrets", "200": "200 secrets"}


async def _run(server: procs.Proc, builds: dict[str, str], values: dict[str, list[str]],
               rounds: int, size: int) -> dict[str, float]:
    spent = dict.fromkeys(builds, 0.0)
    async with open_aio_channel(server.address, token=server.token,
                                options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        logs = build_log_pb2_grpc.BuildLogServiceStub(channel)
        admin = build_pb2_grpc.BuildServiceStub(channel)
        for name, build_id in builds.items():
            for start in range(0, len(values[name]), 100):
                await admin.RegisterBuildSecrets(build_pb2.RegisterBuildSecretsRequest(
                    build_id=build_id, secrets=values[name][start:start + 100]))
        batch = {name: entries(1, size, stamp=False) for name in builds}
        for name, printed in values.items():
            if printed:   # one line of every batch prints a registered value
                batch[name][size // 2] = build_log_pb2.LogEntry(
                    level=build_log_pb2.LOG_LEVEL_TOOL, message=f"export TOKEN={printed[len(printed) // 2]}")
        sequence = dict.fromkeys(builds, 1)
        for round_ in range(rounds + 1):   # round 0 warms up (and loads each build's masker)
            for name, build_id in builds.items():
                began = time.perf_counter()
                await logs.AppendBuildLogs(build_log_pb2.AppendBuildLogsRequest(
                    build_id=build_id, entries=batch[name], first_sequence=sequence[name]))
                if round_:
                    spent[name] += time.perf_counter() - began
                sequence[name] += size
    return {name: rounds * size / seconds for name, seconds in spent.items()}


def masking(url: str, figures: Figures, *, rounds: int = 40, size: int = 500) -> None:
    server = procs.server("server-masking", url)
    try:
        ids = new_builds(url, len(CASES))
        builds = {name: build_id for (name, _), build_id in zip(CASES, ids, strict=True)}
        with psycopg.connect(url) as conn:
            conn.execute("UPDATE builds SET mask_shapes = false WHERE id = %s", (builds["none"],))
        values = {name: [random.token_urlsafe(24) for _ in range(count)] for name, count in CASES}
        rates = asyncio.run(_run(server, builds, values, rounds, size))
        with psycopg.connect(url) as conn:
            stored = conn.execute(
                "SELECT count(*) FROM build_logs WHERE build_id = ANY(%s) AND message LIKE '%%***%%'",
                ([builds["10"], builds["200"]],),
            ).fetchone()
    finally:
        server.stop()
    codes = procs.access_codes(server)
    if set(codes) - {"OK"}:
        figures.errors.append(f"masking: server answered {codes}")
    expected = 2 * (rounds + 1)
    if not stored or stored[0] != expected:
        figures.errors.append(f"masking: {stored[0] if stored else 0} masked lines stored, expected {expected}")
    base = rates["none"]
    for name, _ in CASES:
        figures.values[f"masking.{name}"] = rates[name]
    for name, _ in CASES[1:]:
        cost = 1 - rates[name] / base
        met = "met" if name != "200" or cost <= 0.15 else "NOT met"
        figures.rows.append((
            f"AppendBuildLogs with masking, {LABELS[name]} registered (shapes on), batches of {size}, 1 appender",
            f"{rates[name]:,.0f} lines/s",
            f"no masking (shapes off, no secrets), same run: {base:,.0f} lines/s",
            f"cost {cost:.1%}" + (f" (target <= 15%: **{met}**)" if name == "200" else ""),
        ))
        print(f"  {LABELS[name]:12} {rates[name]:10.0f} lines/s  cost {cost:6.1%} against no masking ({base:.0f} lines/s)",
              flush=True)
