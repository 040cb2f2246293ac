"""The README's examples run as written, against a real server."""

from __future__ import annotations

import re
import subprocess

from server.config import ENVIRONMENT
from tests.support import ROOT

README = (ROOT / "README.md").read_text()


def tour() -> str:
    block = README.split("<!-- readme-tour:start -->")[1].split("<!-- readme-tour:end -->")[0]
    return block.split("```sh\n", 1)[1].rsplit("```", 1)[0]


def test_the_readme_tour_runs_verbatim_and_prints_what_the_readme_says(server, tmp_path):
    token_file = tmp_path / "admin-token"
    token_file.write_text(server.token + "\n")
    script = tour().replace("127.0.0.1:50051", server.address).replace(".data/admin-token", str(token_file))
    # The address and the token file were the only things changed.
    assert script.count(server.address) >= 3 and script.count(str(token_file)) == 1
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "buildplatform.v1.BuildLogService" in out and "rpc StreamBuildLogs" in out
    for expected in ("BUILD_STATUS_INITIALIZING", "BUILD_STATUS_RUNNING", "BUILD_STATUS_AWAITING_DESIGN_REVIEW",
                     "REVIEW_DECISION_APPROVE", "BUILD_STATUS_COMPLETED", '"caught_up": true',
                     '"message": "added 312 packages"', "refused, as expected", "the agent may not review",
                     "{'start': 10, 'end': 18}"):
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
