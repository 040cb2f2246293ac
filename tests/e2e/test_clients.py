"""The published clients, used the way another service uses them.

The Python wheel is built and installed into a fresh virtual environment, once
with the newest dependencies and once with the oldest it declares, on the
oldest Python it declares that this machine has; the TypeScript package is
packed with `npm pack` and installed into a fresh node project; each then runs
its examples from examples/ against the real server. grpcurl calls the server
with generated/buildplatform.binpb instead of reflection.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from buildplatform.v1 import build_log_pb2, build_pb2

from tests.e2e.browser import Browser, missing
from tests.support import ROOT, CertificateAuthority, ServerProcess, running_server

PY_PACKAGE = ROOT / "generated" / "python"
TS_PACKAGE = ROOT / "generated" / "typescript"
PROTOSET = ROOT / "generated" / "buildplatform.binpb"
EXAMPLES = ROOT / "examples"
PY_EXAMPLES = [
    EXAMPLES / "python" / name
    for name in ("first_call.py", "quickstart.py", "tls_call.py", "error_details.py")
]
GRPCURL = ROOT / ".venv" / "bin" / "grpcurl"
MYPY = Path(sys.executable).parent / "mypy"


def token_env(server: ServerProcess) -> dict[str, str]:
    """The examples read their token from BUILDPLATFORM_TOKEN: the server's admin token."""
    return {"BUILDPLATFORM_TOKEN": server.token}


def run(
    *cmd: str | Path, cwd: Path = ROOT, timeout: float = 240, env: dict[str, str] | None = None
) -> str:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )
    assert result.returncode == 0, (
        f"{cmd} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def assert_followed_the_build_live(output: str) -> None:
    """Both quickstarts print the same: the backlog, the caught-up marker, the
    lines written after it, and the end of the stream once the build ended."""
    lines = output.strip().splitlines()
    assert lines[:4] == [
        "1 INFO queued",
        "-- caught up, now live --",
        "2 INFO compiling",
        "3 TOOL npm test: 12 passed",
    ], output
    assert len(lines) == 5 and re.fullmatch(r"build \S+ ended COMPLETED", lines[4]), output


def assert_lists_newest_builds(output: str, newest_id: str) -> None:
    """Both first calls print up to five builds, newest first."""
    lines = output.strip().splitlines()
    assert 1 <= len(lines) <= 5 and lines[0] == f"{newest_id} BUILD_STATUS_PENDING", output
    assert all(re.fullmatch(r"\S+ BUILD_STATUS_[A-Z_]+", line) for line in lines), output


# Python: the wheel in a fresh virtual environment


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("python-dist")
    run(
        sys.executable, "-m", "build", "--outdir", out, PY_PACKAGE
    )  # sdist, then the wheel from the sdist
    (built,) = out.glob("buildplatform_api-*-py3-none-any.whl")
    return built


@pytest.fixture(scope="module")
def fresh_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a new virtual environment holding only the wheel (with
    its [typing] extra) and what it depends on."""
    env = tmp_path_factory.mktemp("fresh-venv")
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    run(
        python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{wheel}[typing]"
    )
    return python


def test_wheel_carries_the_stubs_type_information_and_the_generated_codes_runtime_floors(wheel: Path):
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    modules = sorted(
        p.stem for p in (PY_PACKAGE / "src" / "buildplatform" / "v1").glob("*_pb2*.py")
    )
    for module in modules:
        assert (
            f"buildplatform/v1/{module}.py" in names and f"buildplatform/v1/{module}.pyi" in names
        )
    assert "buildplatform/py.typed" in names

    # The lower bounds are the versions the code was generated for: older
    # runtimes refuse to import it. A protobuf runtime loads the gencode of
    # its own major and of the one before, so the next major is allowed too.
    deps = tomllib.loads((PY_PACKAGE / "pyproject.toml").read_text())["project"]["dependencies"]
    grpc_gen = re.search(
        r"GRPC_GENERATED_VERSION = '([\d.]+)'",
        (PY_PACKAGE / "src/buildplatform/v1/build_pb2_grpc.py").read_text(),
    )
    pb_gen = re.search(
        r"Domain.PUBLIC,\s+(\d+),\s+(\d+),\s+(\d+),",
        (PY_PACKAGE / "src/buildplatform/v1/build_pb2.py").read_text(),
    )
    assert grpc_gen and pb_gen
    assert f"grpcio>={grpc_gen.group(1)},<2" in deps
    assert f"protobuf>={'.'.join(pb_gen.groups())},<{int(pb_gen.group(1)) + 2}" in deps


def test_python_quickstart_from_the_installed_wheel_follows_a_build_live(
    fresh_python: Path, server: ServerProcess
):
    where = run(fresh_python, "-c", "import buildplatform.v1.build_pb2 as m; print(m.__file__)")
    assert where.startswith(str(fresh_python.parent.parent)), (
        where
    )  # the wheel, not the repo's generated/
    output = run(
        fresh_python, EXAMPLES / "python" / "quickstart.py", server.address, timeout=120, env=token_env(server)
    )
    assert_followed_the_build_live(output)


def test_python_first_call_from_the_installed_wheel_lists_the_newest_build(
    fresh_python: Path, server: ServerProcess, build
):  # type: ignore[no-untyped-def]
    output = run(fresh_python, EXAMPLES / "python" / "first_call.py", server.address, env=token_env(server))
    assert_lists_newest_builds(output, build.id)


def test_python_tls_example_from_the_installed_wheel_calls_a_tls_server_with_a_token(
    fresh_python: Path, tls_server: ServerProcess, ca: CertificateAuthority, build
):  # type: ignore[no-untyped-def]
    out = run(
        fresh_python, EXAMPLES / "python" / "tls_call.py", tls_server.address, ca.ca_file, env=token_env(tls_server)
    )
    assert_lists_newest_builds(out, build.id)


def assert_reads_the_error_details(output: str) -> None:
    """error_details.py prints the status, then one line per BadRequest violation."""
    lines = output.strip().splitlines()
    assert lines[0].startswith("INVALID_ARGUMENT "), output
    assert {line.split(":")[0] for line in lines[1:]} == {"project.user_id", "project.name"}, output


def test_python_error_details_example_from_the_installed_wheel_reads_the_bad_request(
    fresh_python: Path, server: ServerProcess
):
    output = run(fresh_python, EXAMPLES / "python" / "error_details.py", server.address, env=token_env(server))
    assert_reads_the_error_details(output)


def mypy_strict_passes(python: Path, cache: Path) -> None:
    output = run(
        MYPY,
        "--config-file",
        EXAMPLES / "python" / "mypy.ini",
        "--python-executable",
        python,  # resolve imports in that venv only
        "--cache-dir",
        cache,
        *PY_EXAMPLES,
    )
    assert f"Success: no issues found in {len(PY_EXAMPLES)} source files" in output


def test_python_examples_pass_mypy_strict_against_the_installed_wheel(
    fresh_python: Path, tmp_path: Path
):
    mypy_strict_passes(fresh_python, tmp_path / "mypy-cache")


# Python: the wheel with the oldest dependencies it declares, on the oldest
# Python it declares that this machine has


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in version.split("."))


def lower_bound(requirement: str) -> tuple[str, str]:
    """("grpcio", "1.72.2") of "grpcio>=1.72.2,<2": every dependency has one."""
    name, spec = re.fullmatch(r"([\w.-]+)\s*(?:\[[^\]]*\])?\s*(.*)", requirement).groups()  # type: ignore[union-attr]
    floor = re.search(r">=\s*([\d.]+)", spec)
    assert floor, f"{requirement} declares no lower bound"
    return name, floor.group(1)


def lower_bounds() -> dict[str, str]:
    """Each dependency of the wheel (and of its [typing] extra) at its lower bound."""
    project = tomllib.loads((PY_PACKAGE / "pyproject.toml").read_text())["project"]
    return dict(
        lower_bound(text)
        for text in [*project["dependencies"], *project["optional-dependencies"]["typing"]]
    )


def oldest_python() -> tuple[str, str]:
    """(version, path) of the oldest Python here that the wheel's requires-python
    admits: pyenv's installations, python3.N on PATH, and this very Python."""
    project = tomllib.loads((PY_PACKAGE / "pyproject.toml").read_text())["project"]
    _, floor = lower_bound("python" + project["requires-python"])
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    named = [(p.parent.parent.name, str(p)) for p in pyenv.glob("3.*/bin/python3")]
    named += [(f"3.{n}", found) for n in range(6, 30) if (found := shutil.which(f"python3.{n}"))]
    named.append((".".join(map(str, sys.version_info[:3])), sys.executable))
    admitted = [
        (version_tuple(version), path)
        for version, path in named
        if re.fullmatch(r"\d+(\.\d+)+", version) and version_tuple(version) >= version_tuple(floor)
    ]
    for _, path in sorted(admitted):
        found = subprocess.run(
            [path, "-c", "import ensurepip, sys, venv; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True, text=True,
        )  # fmt: skip
        if found.returncode == 0 and version_tuple(found.stdout.strip()) >= version_tuple(floor):
            return found.stdout.strip(), path
    raise AssertionError(f"no Python here is {floor} or newer, as requires-python asks")


OLDEST_PYTHON = oldest_python()


@pytest.fixture(scope="module")
def oldest_env_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a new virtual environment, made by OLDEST_PYTHON, holding
    the wheel with its [typing] extra and every dependency at its lower bound
    (pip's cache makes it quick after the first time)."""
    env = tmp_path_factory.mktemp("oldest-venv")
    run(OLDEST_PYTHON[1], "-m", "venv", env)
    python = env / "bin" / "python"
    constraints = env / "constraints.txt"
    constraints.write_text("".join(f"{name}=={v}\n" for name, v in lower_bounds().items()))
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", constraints, f"{wheel}[typing]")
    return python


@pytest.mark.parametrize("python", [f"python{OLDEST_PYTHON[0]}"])
def test_python_examples_run_from_the_wheel_at_its_oldest_declared_dependencies(
    python: str, oldest_env_python: Path, server: ServerProcess, tls_server: ServerProcess,
    ca: CertificateAuthority, build, tmp_path: Path,
):  # type: ignore[no-untyped-def]
    installed = {
        d["name"].lower(): d["version"]
        for d in json.loads(run(oldest_env_python, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"))
    }
    for name, floor in lower_bounds().items():
        assert version_tuple(installed[name]) == version_tuple(floor), f"{name}: {installed[name]} installed, {floor} declared"
    assert run(oldest_env_python, "-c", "import platform; print(platform.python_version())").strip() == OLDEST_PYTHON[0]

    def example(name: str, *args: str, on: ServerProcess = server) -> str:
        # -W error: the stubs load on these runtimes without a warning.
        return run(oldest_env_python, "-W", "error", EXAMPLES / "python" / name, *args, timeout=120, env=token_env(on))

    assert_lists_newest_builds(example("first_call.py", server.address), build.id)
    assert_lists_newest_builds(example("tls_call.py", tls_server.address, str(ca.ca_file), on=tls_server), build.id)
    assert_reads_the_error_details(example("error_details.py", server.address))
    assert_followed_the_build_live(example("quickstart.py", server.address))  # a newer build: last
    # mypy no longer checks for Python 3.9, but it checks the examples against
    # the type stubs at the [typing] extra's lower bounds.
    mypy_strict_passes(oldest_env_python, tmp_path / "mypy-cache")


# TypeScript: the npm package in a fresh node project

NODE_MISSING = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
needs_node = pytest.mark.skipif(
    bool(NODE_MISSING),
    reason=f"{' and '.join(NODE_MISSING)} not found: the TypeScript client's tests need Node 20 and npm",
)


@pytest.fixture(scope="module")
def npm_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """@buildplatform/api packed by `npm pack`, as it would be published."""
    if not (TS_PACKAGE / "node_modules").exists():
        run("npm", "ci", "--no-audit", "--no-fund", cwd=TS_PACKAGE)
    packs = tmp_path_factory.mktemp("npm-pack")
    run("npm", "pack", "--pack-destination", packs, cwd=TS_PACKAGE)  # prepack compiles with tsc
    (tarball,) = packs.glob("buildplatform-api-*.tgz")
    return tarball


def example_project(tmp_path_factory: pytest.TempPathFactory, tarball: Path, example: str, *files: str) -> Path:
    """A fresh node project of examples/`example` with the packed package installed."""
    project = tmp_path_factory.mktemp(f"{example}-project")
    for name in ("package.json", "tsconfig.json", *files):
        shutil.copy(EXAMPLES / example / name, project / name)
    run("npm", "install", "--prefer-offline", "--no-audit", "--no-fund", tarball, cwd=project)
    run(project / "node_modules" / ".bin" / "tsc", "-p", project, cwd=project)
    return project


@pytest.fixture(scope="module")
def ts_quickstart(tmp_path_factory: pytest.TempPathFactory, npm_tarball: Path) -> Path:
    """examples/typescript, compiled with tsc, with the packed @buildplatform/api installed."""
    return example_project(
        tmp_path_factory, npm_tarball, "typescript", "first_call.ts", "quickstart.ts", "tls_call.ts"
    )


def test_typescript_quickstart_from_the_packed_package_follows_a_build_live(
    ts_quickstart: Path, server: ServerProcess
):
    installed = json.loads(
        (ts_quickstart / "node_modules" / "@buildplatform" / "api" / "package.json").read_text()
    )
    assert installed["version"] == json.loads((TS_PACKAGE / "package.json").read_text())["version"]
    output = run(
        "node",
        ts_quickstart / "dist" / "quickstart.js",
        f"http://{server.address}",
        cwd=ts_quickstart,
        timeout=120,
        env=token_env(server),
    )
    assert_followed_the_build_live(output)


@needs_node
def test_typescript_first_call_from_the_packed_package_lists_the_newest_build(
    ts_quickstart: Path, server: ServerProcess, build
):  # type: ignore[no-untyped-def]
    output = run(
        "node",
        ts_quickstart / "dist" / "first_call.js",
        f"http://{server.address}",
        cwd=ts_quickstart,
        env=token_env(server),
    )
    assert_lists_newest_builds(output, build.id)


@needs_node
def test_typescript_tls_example_from_the_packed_package_calls_a_tls_server_with_a_token(
    ts_quickstart: Path, tls_server: ServerProcess, ca: CertificateAuthority, build
):  # type: ignore[no-untyped-def]
    output = run(
        "node",
        ts_quickstart / "dist" / "tls_call.js",
        f"https://{tls_server.address}",
        ca.ca_file,
        cwd=ts_quickstart,
        env=token_env(tls_server),
    )
    assert_lists_newest_builds(output, build.id)


# A browser: @buildplatform/api/web, bundled by esbuild, over the HTTP port


@pytest.fixture(scope="module")
def browser_example(tmp_path_factory: pytest.TempPathFactory, npm_tarball: Path) -> Path:
    """examples/browser, type-checked by tsc and bundled by esbuild, with the packed package installed."""
    project = example_project(tmp_path_factory, npm_tarball, "browser", "app.ts", "index.html")
    run(project / "node_modules" / ".bin" / "esbuild", "app.ts", "--bundle", "--format=esm", "--outfile=app.js", cwd=project)
    assert "node:http2" not in (project / "app.js").read_text()  # the web entry pulls in no Node transport
    return project


@contextmanager
def static_site(directory: Path) -> Iterator[str]:
    """`directory` served over HTTP on a free port: another origin than the API's."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    serving = threading.Thread(target=site.serve_forever, daemon=True)
    serving.start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}"
    finally:
        site.shutdown()
        site.server_close()


def test_browser_example_from_the_packed_package_lists_builds_and_follows_a_log_over_the_http_port(
    browser_example: Path, database_url: str, api, build  # type: ignore[no-untyped-def]
):
    lacking = missing()
    if lacking is not None:
        pytest.fail(lacking, pytrace=False)
    for status in (build_pb2.BUILD_STATUS_INITIALIZING, build_pb2.BUILD_STATUS_RUNNING):
        api.builds.TransitionBuild(build_pb2.TransitionBuildRequest(id=build.id, status=status))
    api.logs.AppendBuildLogs(
        build_log_pb2.AppendBuildLogsRequest(
            build_id=build.id,
            entries=[
                build_log_pb2.LogEntry(level=build_log_pb2.LOG_LEVEL_INFO, message="npm install"),
                build_log_pb2.LogEntry(level=build_log_pb2.LOG_LEVEL_TOOL, message="added 312 packages"),
            ],
        )
    )
    browser = Browser()
    with static_site(browser_example) as origin, running_server(database_url, HTTP_CORS_ORIGINS=origin) as server:
        try:
            browser.open(f"{origin}/index.html#api=http://127.0.0.1:{server.http_port}&token={server.token}")
            browser.wait(
                "(id) => document.querySelector('#builds li')?.textContent === `${id} RUNNING`",
                build.id,
                what="the newest build in the list",
            )
            browser.wait(
                "() => document.querySelector('#log').textContent === '1 INFO npm install\\n2 TOOL added 312 packages\\n'",
                what="the log's backlog",
            )
            api.builds.TransitionBuild(
                build_pb2.TransitionBuildRequest(id=build.id, status=build_pb2.BUILD_STATUS_COMPLETED)
            )
            browser.wait(
                "() => document.querySelector('#log').textContent.endsWith('-- the build ended --\\n')",
                what="the stream to end with the build",
            )
            assert browser.errors() == []
        finally:
            browser.close()


# grpcurl with the descriptor set, no reflection


def test_grpcurl_describes_a_service_with_its_comments_from_the_protoset(server: ServerProcess):
    out = run(
        GRPCURL,
        "-plaintext",
        "-H",
        f"authorization: Bearer {server.token}",
        "-protoset",
        PROTOSET,
        server.address,
        "describe",
        "buildplatform.v1.BuildLogService",
    )
    assert (
        "rpc StreamBuildLogs ( .buildplatform.v1.StreamBuildLogsRequest ) returns ( stream .buildplatform.v1.StreamBuildLogsResponse ) {\n"
        "    option (.buildplatform.v1.access) = { scope:SCOPE_READ user:true agent:true };"
        in out
    ), out
    # Comments come only from the descriptor set's source info; reflection carries none.
    assert "// Streams a build's lines, like `tail -f`." in out, out


def test_grpcurl_calls_a_method_with_the_protoset(server: ServerProcess, build):  # type: ignore[no-untyped-def]
    out = run(
        GRPCURL,
        "-plaintext",
        "-H",
        f"authorization: Bearer {server.token}",
        "-protoset",
        PROTOSET,
        "-d",
        json.dumps({"id": build.id}),
        server.address,
        "buildplatform.v1.BuildService/GetBuild",
    )
    got = json.loads(out)["build"]
    assert (
        got["id"] == build.id
        and got["status"] == "BUILD_STATUS_PENDING"
        and got["appSpec"] == build.app_spec
    )  # lowerCamel JSON names


# The documentation shows the examples that these tests run


def test_docs_show_the_quickstarts_verbatim():
    docs = (ROOT / "docs" / "clients.md").read_text()
    for example in (
        EXAMPLES / "python" / "first_call.py",
        EXAMPLES / "python" / "quickstart.py",
        EXAMPLES / "python" / "error_details.py",
        EXAMPLES / "typescript" / "first_call.ts",
        EXAMPLES / "typescript" / "quickstart.ts",
        EXAMPLES / "python" / "tls_call.py",
        EXAMPLES / "typescript" / "tls_call.ts",
        EXAMPLES / "browser" / "app.ts",
    ):
        assert example.read_text() in docs, (
            f"docs/clients.md does not show {example.relative_to(ROOT)} as it is"
        )


# The contract: a break fails `buf breaking` until it is recorded on purpose


def release_tree(tmp_path: Path) -> Path:
    """A copy of what `tools/version.py` reads and writes."""
    for name in (
        "buf.yaml",
        "pyproject.toml",
        "CHANGELOG.md",
        "tools/version.py",
        "generated/python/pyproject.toml",
        "generated/typescript/package.json",
        "generated/typescript/package-lock.json",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("protos", "third_party", "contracts"):
        shutil.copytree(ROOT / name, tmp_path / name)
    return tmp_path


def version_tool(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "tools/version.py", *args], cwd=root, capture_output=True, text=True
    )


def npm_version(root: Path) -> str:
    return json.loads((root / "generated/typescript/package.json").read_text())["version"]


def test_unreleased_work_carries_a_development_version_and_a_release_starts_the_next(tmp_path: Path):
    root = release_tree(tmp_path)
    shown = version_tool(root, "show").stdout.strip()
    # The working tree is unreleased work: X.Y.Z.devN, X.Y.Z-dev.N for npm, after the last release.
    dev = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)\.dev(\d+)", shown)
    assert dev, f"unreleased work must carry a development version, not {shown}"
    assert npm_version(root) == f"{'.'.join(dev.groups()[:3])}-dev.{dev.group(4)}"
    last = re.search(r"^## \[(\d+\.\d+\.\d+)\] - ", (root / "CHANGELOG.md").read_text(), re.M)
    assert last and version_tuple(".".join(dev.groups()[:3])) > version_tuple(last.group(1))
    assert version_tool(root, "check").returncode == 0

    # A release version with unreleased changes listed fails the check: its
    # builds would carry a number already released.
    base = ".".join(dev.groups()[:3])
    assert version_tool(root, "bump", "release", "--date", "2030-01-02").returncode == 0
    assert version_tool(root, "show").stdout.strip() == base and npm_version(root) == base
    assert version_tool(root, "check").returncode == 0
    changelog = root / "CHANGELOG.md"
    changelog.write_text(changelog.read_text().replace("## [Unreleased]\n", "## [Unreleased]\n\n### Fixed\n\n- A fix.\n", 1))
    refused = version_tool(root, "check")
    assert refused.returncode != 0 and "make version BUMP=dev" in refused.stderr, refused.stderr

    # The next version's development starts at the next patch, .dev0.
    major, minor, patch = base.split(".")
    assert version_tool(root, "bump", "dev").returncode == 0
    assert version_tool(root, "show").stdout.strip() == f"{major}.{minor}.{int(patch) + 1}.dev0"
    assert npm_version(root) == f"{major}.{minor}.{int(patch) + 1}-dev.0"
    assert version_tool(root, "check").returncode == 0
    assert version_tool(root, "bump", "dev").returncode == 0
    assert version_tool(root, "show").stdout.strip() == f"{major}.{minor}.{int(patch) + 1}.dev1"


def test_a_breaking_change_fails_until_recorded_and_then_needs_a_new_minor_or_major(tmp_path: Path):
    root = release_tree(tmp_path)
    buf = Path(sys.executable).parent / "buf"
    breaking = [buf, "breaking", "protos", "--against", "contracts/released.binpb"]

    def version(*args: str) -> subprocess.CompletedProcess[str]:
        return version_tool(root, *args)

    run(*breaking, cwd=tmp_path)  # the working tree is compatible with the last release
    proto = tmp_path / "protos" / "buildplatform" / "v1" / "build_log.proto"
    proto.write_text(proto.read_text().replace("bool caught_up = 3;", "bool up_to_date = 3;"))
    refused = subprocess.run(
        [str(c) for c in breaking], cwd=tmp_path, capture_output=True, text=True
    )
    assert (
        refused.returncode != 0
        and 'changed name from "caught_up" to "up_to_date"' in refused.stdout
    )
    assert version("bump", "major").returncode != 0  # no release with an unrecorded break

    assert version("accept-break", "Renamed caught_up to up_to_date.").returncode == 0
    run(*breaking, cwd=tmp_path)
    assert (
        "### Breaking\n\n- Renamed caught_up to up_to_date."
        in (tmp_path / "CHANGELOG.md").read_text()
    )
    # The next release is counted from the last one (the development version sorts before it).
    last = re.search(r"^## \[(\d+\.\d+\.\d+)\] - ", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert last is not None
    major, minor, _ = last.group(1).split(".")
    compatible, breaking_part, expected = (
        ("patch", "minor", f"{major}.{int(minor) + 1}.0")
        if major == "0"
        else ("minor", "major", f"{int(major) + 1}.0.0")
    )
    refused_bump = version("bump", compatible)
    assert refused_bump.returncode != 0 and f"bump {breaking_part}" in refused_bump.stderr
    assert version("bump", breaking_part, "--date", "2030-01-02").returncode == 0
    assert version("show").stdout.strip() == expected
    assert (
        f"## [{expected}] - 2030-01-02\n\n### Breaking" in (tmp_path / "CHANGELOG.md").read_text()
    )
    assert (
        json.loads((tmp_path / "generated/typescript/package.json").read_text())["version"]
        == expected
    )
    run(*breaking, cwd=tmp_path)  # the new release's contract is the baseline now
