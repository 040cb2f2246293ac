"""The README's examples run as written, against a real server."""

from __future__ import annotations

import json
import re
import subprocess

from server.config import ENVIRONMENT
from tests.support import ROOT, make_run_starts

README = (ROOT / "README.md").read_text()


def tour() -> str:
    block = README.split("<!-- readme-tour:start -->")[1].split("<!-- readme-tour:end -->")[0]
    return block.split("```sh\n", 1)[1].rsplit("```", 1)[0]


def test_the_readme_tour_runs_verbatim_and_prints_what_the_readme_says(server, tmp_path):
    token_file = tmp_path / "admin-token"
    token_file.write_text(server.token + "\n")
    script = (tour().replace("127.0.0.1:50051", server.address).replace(".data/admin-token", str(token_file))
              .replace("127.0.0.1:8080", f"127.0.0.1:{server.http_port}"))
    # The addresses and the token file were the only things changed.
    assert script.count(server.address) >= 3 and script.count(str(token_file)) == 1
    assert script.count(f"127.0.0.1:{server.http_port}") == 1
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "buildplatform.v1.BuildLogService" in out and "rpc StreamBuildLogs" in out
    for expected in ("BUILD_STATUS_INITIALIZING", "BUILD_STATUS_RUNNING", "BUILD_STATUS_AWAITING_DESIGN_REVIEW",
                     "REVIEW_DECISION_APPROVE", "BUILD_STATUS_COMPLETED", '"caught_up": true',
                     '"message": "added 312 packages"', "refused, as expected", "the agent may not review",
                     "INFO  npm install\nTOOL  added 312 packages\n"):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    documented = re.search(r"The last call prints:\n\n```\n(.*?)```", README, re.S)
    assert documented is not None
    for line in documented.group(1).strip().splitlines():
        assert line.strip() in result.stderr, f"README promises {line!r}; grpcurl printed:\n{result.stderr}"


def test_the_readme_documents_every_environment_variable():
    for name, default, _ in ENVIRONMENT:
        row = re.search(rf"^\| `{name}` \| ([^|]*) \|", README, re.M)
        assert row is not None, f"{name} is not in the README's configuration table"
        if default:
            assert f"`{default}`" in row.group(1), f"{name}: the README does not show the default {default!r}"


def test_the_readme_shows_the_tested_first_call_examples_as_they_are():
    """tests/e2e/test_clients.py runs these files from the built packages."""
    for example in ("examples/python/first_call.py", "examples/typescript/first_call.ts"):
        assert (ROOT / example).read_text() in README, f"the README does not show {example} as it is"


def test_the_readme_says_what_a_later_make_run_prints_at_info():
    """The README's block of `make run`'s lines against a real second start
    (the first one made the data directory and the admin token)."""
    block = re.search(r"`make run` says, at `INFO`.*?```\n(.*?)```", README, re.S)
    assert block is not None
    documented = [json.loads(line.replace(", ...}", "}")) for line in block.group(1).strip().splitlines()]
    with make_run_starts(2) as (directory, runs):
        later = runs[-1]
    ports = {"50051": str(later.port), "8080": str(later.http_port), "9464": str(later.metrics_port)}
    printed = [json.loads(line) for line in later.lines]
    printed = [record for record in printed if record["level"] == "INFO"]
    printed = printed[:next(i for i, record in enumerate(printed) if "build log pages" in record["msg"]) + 1]
    expected = []
    for record in documented:
        assert record["level"] == "INFO"
        msg = record["msg"].replace("/home/you/buildplatform/.data/postgres", str(directory / "postgres"))
        msg = msg.replace("/home/you/buildplatform/.data/admin-token", str(directory / "admin-token"))
        expected.append(re.sub(r"(?<=:)(50051|8080|9464)\b", lambda port: ports[port.group(0)], msg))
    assert [record["msg"] for record in printed] == expected


def test_the_readme_says_authentication_is_enforced():
    """It said "built but not yet enforced" after every RPC needed a credential."""
    assert "not yet enforced" not in README
    assert "Every RPC but health" in " ".join(README.split())
