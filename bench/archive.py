"""The archive codec on realistic build output (issue 14, docs/lifecycle.md).

`build_output` writes what CI builds print: ANSI-coloured compiler
diagnostics with their source excerpts, CMake/cargo progress, test runner
lines (pytest, jest), npm install chatter, docker layer progress and stack
traces (Python, Java, Node), with identifiers, paths, numbers, durations and
hashes drawn at random so that no two builds, and few lines, repeat. Tests
(tests/unit/test_archive_chunks.py) and the benches share it.

`measure` encodes such a log with server.archive.chunks and, in the same
process, compresses the same wire bytes with plain zstd (one streamed frame,
same level): lines per second and compression ratio of each. `archive` is
the `make bench` entry (BENCH_ARGS="--only archive"); `python -m
bench.archive` prints the figures and the level table alone, without a
database.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import zstandard

from server.archive import chunks
from server.live.records import Entry, log_entry

_SYLLABLES = ("ba", "co", "de", "fi", "gu", "ha", "jo", "ka", "li", "mu", "ne", "po", "qu", "ra", "si", "tu",
              "ve", "wo", "xa", "yi", "zu", "an", "el", "in", "or", "ux", "str", "tr", "pl", "gr", "ch", "sh")
_WORDS = ("request", "handler", "cache", "buffer", "parser", "token", "session", "client", "server", "config",
          "stream", "index", "worker", "queue", "schema", "render", "layout", "router", "store", "reducer",
          "widget", "payload", "encoder", "decoder", "manifest", "resolver", "bundle", "module", "plugin", "fixture")
_EXT = ("c", "cc", "cpp", "h", "rs", "ts", "tsx", "py", "go", "java")
_WARNINGS = ("unused variable '{i}' [-Wunused-variable]", "comparison of integers of different signs: 'int' and "
             "'size_t' [-Wsign-compare]", "implicit conversion loses integer precision: 'long' to 'int' "
             "[-Wshorten-64-to-32]", "'{i}' is deprecated: use '{j}' instead [-Wdeprecated-declarations]",
             "unused parameter '{i}' [-Wunused-parameter]", "variable '{i}' set but not used [-Wunused-but-set-variable]")
_TS_ERRORS = ("Type 'string' is not assignable to type 'number'.", "Property '{i}' does not exist on type '{J}'.",
              "Argument of type '{J}' is not assignable to parameter of type '{K}'.",
              "Cannot find name '{i}'.", "Object is possibly 'undefined'.")
_NPM_REASONS = ("this package is no longer maintained", "use {j} instead", "Glob versions prior to v9 are no longer "
                "supported", "Rimraf versions prior to v4 are no longer supported",
                "please upgrade to the latest version for security fixes")
_UNICODE = ("✓", "✗", "→", "…", "⚠", "🚀", "📦", "✨", "构建成功", "テスト", "ñ", "ü")


class _Names:
    """A project's vocabulary: identifiers, types, paths and packages drawn
    once per build (a codebase has a finite set of them, used unevenly), so
    that lines vary the way real ones do rather than being random text."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.idents = [self._ident() for _ in range(3000)]
        self.types = [self._ident().title().replace("_", "") for _ in range(600)]
        self.paths = [self._path() for _ in range(800)]
        self.packages = [self._ident() + rng.choice(("", "-js", "-utils", "-core", "-cli")) for _ in range(900)]

    def _ident(self) -> str:
        rng = self.rng
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        return rng.choice((word, f"{rng.choice(_WORDS)}_{word}", f"{word}{rng.choice(_WORDS).title()}"))

    def _pick(self, names: list[str]) -> str:
        rank = int(len(names) * self.rng.random() ** 3)   # skewed towards the first names
        return names[rank]

    def ident(self) -> str:
        return self._pick(self.idents)

    def type_name(self) -> str:
        return self._pick(self.types)

    def _path(self) -> str:
        rng = self.rng
        parts = [rng.choice(("src", "lib", "app", "pkg", "internal", "crates")),
                 *(rng.choice(_WORDS) for _ in range(rng.randint(0, 3)))]
        return "/".join(parts) + "/" + self._ident() + "." + rng.choice(_EXT)

    def path(self) -> str:
        return self._pick(self.paths)

    def package(self) -> str:
        return self._pick(self.packages)

    def version(self) -> str:
        rng = self.rng
        return f"{rng.randint(0, 12)}.{rng.randint(0, 40)}.{rng.randint(0, 30)}"

    def fill(self, template: str) -> str:
        return template.format(i=self.ident(), j=self.ident(), J=self.type_name(), K=self.type_name())


def build_output(lines: int, seed: int = 0) -> Iterator[tuple[str, str]]:
    """`lines` (level, message) pairs of a plausible CI build, deterministic for a seed."""
    rng = random.Random(seed)
    names = _Names(rng)
    made = 0
    step = 0
    while made < lines:
        step += 1
        kind = rng.choices(("compile", "tests", "npm", "docker", "trace", "plain"), (30, 25, 15, 10, 5, 15))[0]
        for level, message in _block(kind, rng, names, step):
            yield level, message
            made += 1
            if made >= lines:
                return


def _block(kind: str, rng: random.Random, names: _Names, step: int) -> Iterator[tuple[str, str]]:
    if kind == "compile":
        total = rng.randint(5, 60)
        for n in range(total):
            path = names.path()
            if path.endswith(".rs"):
                yield "info", f"   \x1b[1m\x1b[32mCompiling\x1b[0m {names.package()} v{names.version()}"
            else:
                yield "info", (f"[{100 * (n + 1) // total:3d}%] \x1b[32mBuilding CXX object "
                               f"{path.rsplit('/', 1)[0]}/CMakeFiles/{names.ident()}.dir/{path.rsplit('/', 1)[1]}.o\x1b[0m")
            if rng.random() < 0.12:
                line, col, ident = rng.randint(1, 2400), rng.randint(1, 80), names.ident()
                yield "warn", (f"\x1b[1m{path}:{line}:{col}: \x1b[0m\x1b[1;35mwarning: \x1b[0m\x1b[1m"
                               f"{names.fill(rng.choice(_WARNINGS))}\x1b[0m")
                yield "warn", f" {line:4d} |     {rng.choice(('int', 'auto', 'size_t', 'let'))} {ident} = {names.ident()}({rng.randint(0, 999)});"
                yield "warn", f"      | {' ' * rng.randint(4, 20)}\x1b[1;32m^{'~' * rng.randint(2, 12)}\x1b[0m"
            if rng.random() < 0.03:
                yield "error", (f"{names.path().rsplit('.', 1)[0]}.ts({rng.randint(1, 900)},{rng.randint(1, 60)}): "
                                f"\x1b[91merror\x1b[0m \x1b[90mTS{rng.randint(1000, 7999)}:\x1b[0m {names.fill(rng.choice(_TS_ERRORS))}")
    elif kind == "tests":
        runner = rng.choice(("pytest", "jest"))
        for _ in range(rng.randint(10, 80)):
            ok = rng.random() > 0.04
            if runner == "pytest":
                status = "\x1b[32mPASSED\x1b[0m" if ok else "\x1b[31mFAILED\x1b[0m"
                yield ("info" if ok else "error"), (f"tests/{names.ident()}/test_{names.ident()}.py::test_{names.ident()}"
                                                    f"[{names.ident()}-{rng.randint(0, 99)}] {status} [{rng.randint(0, 100):3d}%]")
            else:
                mark = "\x1b[32m✓\x1b[39m" if ok else "\x1b[31m✕\x1b[39m"
                yield ("info" if ok else "error"), (f"    {mark} {rng.choice(_WORDS)} {names.ident().replace('_', ' ')} "
                                                    f"{rng.choice(('renders', 'returns', 'rejects', 'handles', 'retries'))} "
                                                    f"{names.ident()} \x1b[2m({rng.randint(1, 900)} ms)\x1b[22m")
        passed, failed = rng.randint(50, 3000), rng.randint(0, 4)
        yield "info", (f"\x1b[32m=== {passed} passed\x1b[0m, \x1b[{'31' if failed else '32'}m{failed} failed\x1b[0m, "
                       f"{rng.randint(0, 20)} skipped in {rng.uniform(1, 400):.2f}s ===")
    elif kind == "npm":
        for _ in range(rng.randint(5, 40)):
            pkg = names.package()
            roll = rng.random()
            if roll < 0.6:
                yield "tool", (f"npm http fetch GET 200 https://registry.npmjs.org/{pkg}/-/{pkg}-{names.version()}.tgz "
                               f"{rng.randint(3, 900)}ms (cache {rng.choice(('miss', 'hit', 'revalidated'))})")
            elif roll < 0.85:
                yield "warn", f"npm \x1b[33mWARN\x1b[39m deprecated {pkg}@{names.version()}: {names.fill(rng.choice(_NPM_REASONS))}"
            else:
                yield "info", f"{rng.choice(('├─', '└─', '│ ├─'))} {pkg}@{names.version()} {rng.choice(_UNICODE)}"
        yield "info", (f"added {rng.randint(50, 1500)} packages, and audited {rng.randint(50, 1600)} packages in "
                       f"{rng.randint(2, 90)}s")
    elif kind == "docker":
        layer = rng.randint(2, 30)
        yield "info", f"#{layer} [build {rng.randint(1, 9)}/9] RUN {rng.choice(('pip install -r requirements.txt', 'npm ci', 'cargo build --release', 'make -j4'))}"
        total = rng.uniform(1, 300)
        for _ in range(rng.randint(2, 12)):
            yield "info", (f"#{layer} sha256:{rng.getrandbits(256):064x} {rng.uniform(0, total):.2f}MB / {total:.2f}MB "
                           f"{rng.uniform(0, 60):.1f}s")
        yield "info", f"#{layer} DONE {rng.uniform(0.1, 200):.1f}s"
    elif kind == "trace":
        flavour = rng.choice(("python", "java", "node"))
        if flavour == "python":
            yield "error", "Traceback (most recent call last):"
            for _ in range(rng.randint(3, 15)):
                yield "error", f'  File "/app/{names.path().rsplit(".", 1)[0]}.py", line {rng.randint(1, 3000)}, in {names.ident()}'
                yield "error", f"    {names.ident()} = {names.ident()}.{names.ident()}({names.ident()}, timeout={rng.randint(1, 60)})"
            yield "error", f"{rng.choice(('KeyError', 'ValueError', 'TimeoutError', 'AssertionError'))}: '{names.ident()}'"
        elif flavour == "java":
            yield "error", f"Exception in thread \"{names.ident()}-{rng.randint(1, 64)}\" java.lang.IllegalStateException: {names.ident()}"
            for _ in range(rng.randint(5, 30)):
                cls = names.type_name()
                yield "error", f"\tat com.example.{names.ident().lower()}.{cls}.{names.ident()}({cls}.java:{rng.randint(1, 2000)})"
        else:
            yield "error", f"TypeError: Cannot read properties of undefined (reading '{names.ident()}')"
            for _ in range(rng.randint(4, 15)):
                yield "error", (f"    at {names.ident()} (/app/node_modules/{names.package()}/lib/{names.ident()}.js:"
                                f"{rng.randint(1, 5000)}:{rng.randint(1, 120)})")
    else:
        for _ in range(rng.randint(1, 10)):
            yield "info", rng.choice((
                f"\x1b[36m[{step:03d}]\x1b[0m {names.ident()} {rng.choice(_WORDS)} took {rng.uniform(0, 9):.3f}s",
                f"Downloading {names.package()}-{names.version()}-py3-none-any.whl ({rng.randint(5, 9000)} kB)",
                f"$ {rng.choice(('make', 'cargo', 'go', 'npm run', 'pytest'))} {names.ident()} --{names.ident()}={rng.randint(0, 64)}",
                f"{rng.choice(_UNICODE)} {names.ident()} {rng.choice(_UNICODE)} {rng.choice(_WORDS)} {rng.randint(0, 10**6)}",
            ))


def log_entries(build_id: str, lines: int, seed: int = 0, *, first_id: int = 1,
                start: datetime | None = None) -> Iterator[Entry]:
    """`lines` log rows of `build_id` (seq 1..lines) as the live feed keeps
    them: made by the hot path's own converter, so the wire is what a stream
    sends. A few rows carry metadata, as agents send it."""
    rng = random.Random(seed ^ 0x5EED)
    when = start or datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    for seq, (level, message) in enumerate(build_output(lines, seed), start=1):
        when += timedelta(microseconds=int(rng.expovariate(1 / 3000)))
        metadata: dict[str, Any] = {}
        if rng.random() < 0.05:
            metadata = {"step": f"step-{rng.randint(1, 20)}", "attempt": rng.randint(1, 3)}
        yield log_entry({"id": first_id + seq - 1, "build_id": build_id, "seq": seq, "level": level,
                         "message": message, "metadata": metadata, "create_time": when})


def measure(lines: int = 200_000, seed: int = 1, level: int = chunks.LEVEL, rounds: int = 3) -> dict[str, float]:
    """Encode `lines` realistic lines with the codec, and compress the same
    wire bytes with plain zstd (one streamed frame, same level), in this
    process; the best of `rounds` each. Lines per second and ratios
    (wire bytes / stored bytes)."""
    entries = list(log_entries("c" + "0" * 24, lines, seed))
    wire = sum(len(e.wire) for e in entries)
    codec_s, zstd_s = float("inf"), float("inf")
    stored = plain = 0
    count = 0
    for _ in range(rounds):
        began = time.perf_counter()
        encoder = chunks.Encoder("c" + "0" * 24, "log", "bench", level=level)
        stored, count = 0, 0
        for frame, _meta in encoder.encode(entries):
            stored += len(frame)
            count += 1
        codec_s = min(codec_s, time.perf_counter() - began)
        began = time.perf_counter()
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()
        plain = sum(len(compressor.compress(e.wire)) for e in entries) + len(compressor.flush())
        zstd_s = min(zstd_s, time.perf_counter() - began)
    decode_s = float("inf")
    frames = list(chunks.Encoder("c" + "0" * 24, "log", "bench", level=level).encode(entries))
    for _ in range(rounds):
        began = time.perf_counter()
        for frame, meta in frames:
            chunks.decode(frame, meta)
        decode_s = min(decode_s, time.perf_counter() - began)
    return {
        "lines": lines, "wire_mb": wire / 1e6, "chunks": count,
        "codec_lines_s": lines / codec_s, "zstd_lines_s": lines / zstd_s, "decode_lines_s": lines / decode_s,
        "codec_ratio": wire / stored, "zstd_ratio": wire / plain, "stored_kb_per_chunk": stored / count / 1e3,
    }


def levels(lines: int = 100_000, choices: tuple[int, ...] = (1, 3, 6, 9, 12, 19)) -> list[dict[str, float]]:
    """measure() at several zstd levels (the table of docs/lifecycle.md)."""
    return [{"level": level, **measure(lines, level=level, rounds=1)} for level in choices]


def archive(url: str, figures: Any) -> None:
    """`make bench`: codec throughput and ratio beside plain zstd of the same bytes (no database needed)."""
    del url
    m = measure()
    print(f"  {m['lines']:,.0f} lines ({m['wire_mb']:.1f} MB of wire bytes) in {m['chunks']:.0f} chunks of "
          f"{m['stored_kb_per_chunk']:.0f} kB stored: codec {m['codec_lines_s']:,.0f} lines/s, ratio "
          f"{m['codec_ratio']:.1f}; plain zstd {m['zstd_lines_s']:,.0f} lines/s, ratio {m['zstd_ratio']:.1f}; "
          f"decode {m['decode_lines_s']:,.0f} lines/s", flush=True)
    figures.values.update({f"archive.{k}": v for k, v in m.items()})
    figures.rows.append((
        f"Archive encode (chunks of {chunks.CHUNK_BYTES >> 20} MiB, zstd {chunks.LEVEL}), {m['lines']:,.0f} realistic lines",
        f"{m['codec_lines_s']:,.0f} lines/s, ratio {m['codec_ratio']:.1f}:1",
        f"plain zstd {chunks.LEVEL} of the same bytes: {m['zstd_lines_s']:,.0f} lines/s, ratio {m['zstd_ratio']:.1f}:1",
        f"{m['codec_lines_s'] / m['zstd_lines_s']:.2f} speed, {m['codec_ratio'] / m['zstd_ratio']:.2f} ratio",
    ))
    figures.rows.append((
        "Archive decode (crc32, zstd checksum, records)", f"{m['decode_lines_s']:,.0f} lines/s",
        f"encode {m['codec_lines_s']:,.0f} lines/s", f"{m['decode_lines_s'] / m['codec_lines_s']:.1f}x encode",
    ))


def main() -> None:
    m = measure()
    for key, value in m.items():
        print(f"{key:22s} {value:,.2f}")
    if "--levels" in sys.argv:
        print("\nlevel  codec lines/s  ratio  decode lines/s  kB/chunk")
        for row in levels():
            print(f"{row['level']:5.0f}  {row['codec_lines_s']:13,.0f}  {row['codec_ratio']:5.1f}  "
                  f"{row['decode_lines_s']:14,.0f}  {row['stored_kb_per_chunk']:8.0f}")


if __name__ == "__main__":
    main()
