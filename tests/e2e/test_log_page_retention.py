"""The log page of a build whose logs expired (LOGS_EXPIRED), in a real Chromium."""

from __future__ import annotations

import time
from types import SimpleNamespace

import psycopg
from buildplatform.v1 import build_pb2

from tests.e2e.browser import Browser
from tests.e2e.test_log_page import LogPage, append, browser, http_base, page_server, run  # noqa: F401
from tests.support import ServerProcess


def test_the_page_says_in_words_when_the_logs_expired_and_does_not_retry(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, database_url: str,  # noqa: F811
    build: build_pb2.Build,
):
    run(api, build)
    append(api, build.id, "compiling", "linking")
    api.builds.TransitionBuild(build_pb2.TransitionBuildRequest(id=build.id, status=build_pb2.BUILD_STATUS_COMPLETED))
    # What the janitor writes when a 30-day retention passed (tests/e2e/test_janitor.py runs it).
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE builds SET finish_time = '2026-01-01T10:00:00Z', archive_state = 'expired', "
            "expire_time = '2026-01-31T10:05:00Z' WHERE id = %s", (build.id,))

    page = LogPage(browser, http_base(page_server), build.id, page_server.token)
    browser.wait("() => !document.getElementById('expired').hidden", what="the page to say the logs expired")
    browser.wait("() => document.getElementById('expired').textContent.includes('retention')",
                 what="the retention, once the build's finish time is there")
    said = page.text("#expired")
    assert said.startswith("The logs of this build expired on 2026-01-31 10:05 UTC and were deleted"), said
    assert "(retention 30 days after the build finished)" in said, said
    assert page.text("#status") == "completed"
    assert page.sequences() == []
    assert page.connection() == "failed" and page.text("#connection") == "logs expired"
    assert browser.evaluate("() => document.getElementById('problem').hidden")
    time.sleep(1.5)  # longer than the first pause before a retry
    assert page.text("#connection") == "logs expired" and page.sequences() == []
    assert browser.errors() == []
