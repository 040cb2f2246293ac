"""The log page's links, steps, timestamps, tool metadata, events feed and
review form, in a real Chromium against a real server (tests/e2e/browser.py).

Lines and events are written through gRPC with the generated stubs; what the
page shows is read off the DOM as a person sees it."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import psycopg
from buildplatform.v1 import build_event_pb2, build_log_pb2, build_pb2
from google.protobuf import struct_pb2

from server import migrate
from tests.e2e.browser import Browser
from tests.e2e.streaming import finish, new_build
from tests.e2e.test_log_page import (
    ERROR,
    INFO,
    TOOL,
    LogPage,
    append,
    browser,
    http_base,
    page_server,
    run,
)
from tests.support import (
    ServerProcess,
    create_database,
    drop_database,
    eventually,
    free_port,
    running_server,
    service_token,
    stubs,
)

__all__ = ["browser", "page_server"]  # the fixtures, shared with test_log_page

START, END = build_log_pb2.LOG_STEP_ACTION_START, build_log_pb2.LOG_STEP_ACTION_END
HIGHLIGHTED = "() => [...document.querySelectorAll('#lines .highlighted')].map((e) => Number(e.dataset.sequence))"
ON_SCREEN = """(seq) => {
    const row = document.querySelector(`#lines [data-sequence='${seq}']`);
    if (row === null) return false;
    const box = row.getBoundingClientRect(), log = document.getElementById('log').getBoundingClientRect();
    return box.top >= log.top && box.bottom <= log.bottom;
}"""

WHERE = """(seq) => {
    const row = document.querySelector(`#lines [data-sequence='${seq}']`);
    const log = document.getElementById('log');
    return {row: row && row.getBoundingClientRect().toJSON(), log: log.getBoundingClientRect().toJSON(), top: log.scrollTop,
            first: document.querySelector('#lines .line')?.dataset.sequence, rows: document.querySelectorAll('#lines .line').length};
}"""


def open_at(browser: Browser, server: ServerProcess, build_id: str, target: str, token: str | None = None) -> None:
    browser.open(f"{http_base(server)}/builds/{build_id}#{target}&token={token or server.token}")


def many(api: SimpleNamespace, build_id: str, count: int) -> int:
    last = 0
    for start in range(0, count, 1000):
        last = append(api, build_id, *(f"line {i}" for i in range(start + 1, min(count, start + 1000) + 1)))
    return last


def test_a_link_to_a_line_far_from_the_tail_opens_scrolled_to_it_and_highlighted(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build
):
    run(api, build)
    assert many(api, build.id, 5000) == 5000
    open_at(browser, page_server, build.id, "L1234")
    browser.wait("() => document.body.dataset.target === 'shown'", what="the linked line")
    assert browser.evaluate(HIGHLIGHTED) == [1234]
    assert browser.evaluate(ON_SCREEN, 1234), browser.evaluate(WHERE, 1234)
    assert browser.evaluate("() => document.querySelector(\"#lines [data-sequence='1234'] .message\").textContent") == "line 1234"
    # The token left the address bar; the link stays, to be copied.
    assert browser.evaluate("() => location.hash") == "#L1234"
    assert not browser.evaluate("() => buildLog.following")
    # At most the DOM window, however far the line is from the tail.
    assert browser.evaluate("() => document.querySelectorAll('#lines .line').length") <= 1500

    # A range.
    open_at(browser, page_server, build.id, "L2000-L2010")
    browser.wait("() => document.body.dataset.target === 'shown'", what="the linked range")
    assert browser.evaluate(HIGHLIGHTED) == list(range(2000, 2011))
    assert browser.evaluate(ON_SCREEN, 2000)
    assert browser.evaluate("() => location.hash") == "#L2000-L2010"

    # A click on a line's number links to it; a shift-click extends the range.
    browser.click("#lines [data-sequence='2003'] .ln")
    assert browser.evaluate("() => location.hash") == "#L2003"
    assert browser.evaluate(HIGHLIGHTED) == [2003]
    browser.evaluate(
        "() => document.querySelector(\"#lines [data-sequence='2006'] .ln\").dispatchEvent("
        "new MouseEvent('click', {bubbles: true, cancelable: true, shiftKey: true}))"
    )
    assert browser.evaluate("() => location.hash") == "#L2003-L2006"
    assert browser.evaluate(HIGHLIGHTED) == [2003, 2004, 2005, 2006]
    assert browser.errors() == []


def test_a_link_into_an_archived_log_opens_scrolled_and_highlighted_with_its_steps_and_events(
    browser: Browser, postgres: str, tmp_path: Path
):
    """A server that archives finished builds at once (its own database, so no
    other test's build is archived where that test's servers do not look)."""
    url = create_database(postgres, prefix="bp_page")
    migrate.upgrade(url)
    env = {
        "HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
        "ARCHIVE_URL": str(tmp_path / "archive"),
        "ARCHIVE_AFTER_SECONDS": "0",
        "ARCHIVE_INTERVAL_SECONDS": "0.2",
    }
    try:
        with running_server(url, **env) as server, server.channel() as channel:
            api = stubs(channel)
            build = new_build(api)
            run(api, build)
            events(api, build.id, "checkout")
            append(api, build.id, "before the step")
            api.logs.AppendBuildLogs(
                build_log_pb2.AppendBuildLogsRequest(
                    build_id=build.id,
                    entries=[step("compile", START, name="Compile"), line("cc -c a.c"), line("a.c:1: error", ERROR), step("compile", END)],
                )
            )
            assert many(api, build.id, 6000) == 6000 + 5
            finish(api, build.id)

            def archived() -> bool:
                with psycopg.connect(url) as pg:
                    found = pg.execute("SELECT archive_state FROM builds WHERE id = %s", (build.id,)).fetchone()
                return found is not None and found[0] == "archived"

            eventually(archived, "the build to be archived")
            open_at(browser, server, build.id, "L4321", token=server.token)
            browser.wait("() => document.body.dataset.target === 'shown'", what="the linked line of the archived log")
            assert browser.evaluate(HIGHLIGHTED) == [4321]
            assert browser.evaluate(ON_SCREEN, 4321), browser.evaluate(WHERE, 4321)
            assert browser.evaluate("() => document.querySelector(\"#lines [data-sequence='4321'] .message\").textContent") == "line 4316"
            # The archived lines carry their steps: the failed step is open, with its error mark.
            browser.evaluate("() => document.getElementById('log').dispatchEvent(new KeyboardEvent('keydown', {key: 'Home'}))")
            browser.wait("() => document.querySelector(\"#lines [data-step='compile']\") !== null", what="the step's header")
            assert browser.evaluate("() => document.querySelector(\"[data-step='compile'] .step-header\").textContent").endswith("✖ errors")
            assert rows_shown(browser)[:6] == [1, 2, 3, 4, 5, 6]
            browser.wait("() => document.querySelectorAll('#events .event').length === 1", what="the archived event")
            assert browser.errors() == []
    finally:
        drop_database(postgres, url)


def step(step_id: str, action: int, message: str = "", name: str = "", level: int = INFO) -> build_log_pb2.LogEntry:
    return build_log_pb2.LogEntry(level=level, message=message, step=build_log_pb2.LogStep(id=step_id, name=name, action=action))


def line(message: str, level: int = INFO) -> build_log_pb2.LogEntry:
    return build_log_pb2.LogEntry(level=level, message=message)


def rows_shown(browser: Browser) -> list[int]:
    return list(browser.evaluate("() => [...document.querySelectorAll('#lines [data-sequence]')].map((e) => Number(e.dataset.sequence))"))


def test_steps_fold_and_unfold_with_their_duration_and_the_failed_step_open(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build
):
    run(api, build)
    entries = [
        step("install", START, "npm ci", name="Install"),  # 1
        line("added 312 packages"),  # 2
        line("audited"),  # 3
        step("install", END),  # 4
        step("test", START, name="Test"),  # 5
        line("1 passed"),  # 6
        line("1 failed", ERROR),  # 7
        step("test", END),  # 8
        step("deploy", START, name="Deploy"),  # 9: never closed
        line("uploading"),  # 10
    ]
    api.logs.AppendBuildLogs(build_log_pb2.AppendBuildLogsRequest(build_id=build.id, entries=entries))
    page = LogPage(browser, http_base(page_server), build.id, page_server.token)
    # Install ended without an error: folded (its header shown, its lines not).
    # Test holds an error: open. Deploy is running: open.
    page.wait_for_lines([1, 5, 6, 7, 8, 9, 10])
    header = "(s) => { const r = document.querySelector(`#lines [data-step='${s}']`); return {text: r.querySelector('.step-header').textContent, folded: r.dataset.folded, errors: r.classList.contains('step-errors')}; }"
    install = browser.evaluate(header, "install")
    assert re.fullmatch(r"▸Install\d+\.\d\d s", install["text"]), install
    assert (install["folded"], install["errors"]) == ("true", False)
    test = browser.evaluate(header, "test")
    assert re.fullmatch(r"▾Test\d+\.\d\d s✖ errors", test["text"]), test
    assert (test["folded"], test["errors"]) == ("false", True)
    assert browser.evaluate(header, "deploy")["text"] == "▾Deployrunning"
    # The step line's own message follows its header.
    assert page.text("#lines [data-step='install'] .message") == "npm ci"

    browser.click("#lines [data-step='install'] .step-header")
    page.wait_for_lines(list(range(1, 11)))
    assert browser.evaluate(header, "install")["folded"] == "false"
    browser.click("#lines [data-step='test'] .step-header")
    page.wait_for_lines([1, 2, 3, 4, 5, 9, 10])
    browser.click("#lines [data-step='install'] .step-header")
    page.wait_for_lines([1, 5, 9, 10])

    # Lines of a step arrive live inside it; ending the build ends the unclosed step.
    append(api, build.id, "uploaded")
    page.wait_for_lines([1, 5, 9, 10, 11])
    api.builds.TransitionBuild(build_pb2.TransitionBuildRequest(id=build.id, status=build_pb2.BUILD_STATUS_COMPLETED))
    browser.wait(
        # Null-safe: the lines are drawn again when the build ends, and a
        # predicate that throws in between ends the wait at once.
        "() => /^▾Deployunclosed · \\d+\\.\\d\\d s$/.test("
        "document.querySelector(\"[data-step='deploy'] .step-header\")?.textContent ?? '')",
        what="the unclosed step's duration",
    )
    assert browser.errors() == []


def test_the_timestamps_toggle_shows_each_lines_time_in_the_viewers_zone_named(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build
):
    run(api, build)
    append(api, build.id, "first", "second")
    page = LogPage(browser, http_base(page_server), build.id, page_server.token)
    page.wait_for_lines([1, 2])
    zone = browser.evaluate("() => Intl.DateTimeFormat().resolvedOptions().timeZone")
    assert zone and page.text("label.times") == f" times ({zone})"
    assert browser.evaluate("() => document.querySelectorAll('#lines .time').length") == 0
    browser.click("#times")
    browser.wait("() => document.querySelectorAll('#lines .time').length === 2", what="the times")
    shown = page.text("#lines [data-sequence='1'] .time")
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} [+-]\d+:\d\d\.\d", shown), shown
    # The clock is the line's create_time in the viewer's zone.
    listed = api.logs.ListBuildLogs(build_log_pb2.ListBuildLogsRequest(build_id=build.id)).logs[0]
    expected = browser.evaluate(
        "(ms) => new Intl.DateTimeFormat(undefined, {hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3, hourCycle: 'h23'}).format(ms)",
        listed.create_time.ToMilliseconds(),
    )
    assert shown.startswith(expected)
    assert zone in str(browser.evaluate("() => document.querySelector(\"#lines [data-sequence='1'] .time\").title"))
    browser.click("#times")
    browser.wait("() => document.querySelectorAll('#lines .time').length === 0", what="the times hidden")
    assert browser.errors() == []


def test_a_tool_lines_command_and_exit_code_are_shown_compactly(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build
):
    run(api, build)
    failed = struct_pb2.Struct()
    failed.update({"command": ["npm", "test"], "exit_code": 1})
    passed = struct_pb2.Struct()
    passed.update({"command": "npm ci", "exit_code": 0})
    api.logs.AppendBuildLogs(
        build_log_pb2.AppendBuildLogsRequest(
            build_id=build.id,
            entries=[
                build_log_pb2.LogEntry(level=TOOL, message="added 312 packages", metadata=passed),
                build_log_pb2.LogEntry(level=TOOL, message="1 failed", metadata=failed),
                line("plain"),
            ],
        )
    )
    page = LogPage(browser, http_base(page_server), build.id, page_server.token)
    page.wait_for_lines([1, 2, 3])
    assert page.text("#lines [data-sequence='1'] .tool-meta") == "$ npm ciexit 0"
    assert page.text("#lines [data-sequence='2'] .tool-meta") == "$ npm testexit 1"
    assert browser.evaluate("() => document.querySelector(\"#lines [data-sequence='2'] .tool-exit\").className") == "tool-exit failed"
    assert page.text("#lines [data-sequence='2'] .message") == "1 failed"
    assert browser.evaluate("() => document.querySelector(\"#lines [data-sequence='3'] .tool-meta\")") is None


def events(api: SimpleNamespace, build_id: str, *types: str) -> None:
    api.events.AppendBuildEvents(
        build_event_pb2.AppendBuildEventsRequest(
            build_id=build_id, entries=[build_event_pb2.EventEntry(type=t) for t in types]
        )
    )


EVENTS = "() => [...document.querySelectorAll('#events .event')].map((e) => [Number(e.dataset.sequence), e.querySelector('.event-type').textContent])"


def test_the_events_feed_is_live_exactly_once_and_links_to_the_lines_around_an_event(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build
):
    run(api, build)
    events(api, build.id, "checkout", "install")
    page = LogPage(browser, http_base(page_server), build.id, page_server.token)
    browser.wait("() => document.querySelectorAll('#events .event').length === 2", what="2 events")
    assert browser.evaluate(EVENTS) == [[1, "checkout"], [2, "install"]]
    many(api, build.id, 3000)
    events(api, build.id, "test.started")
    append(api, build.id, "after the event", "and another")
    events(api, build.id, "test.finished", "deploy")
    browser.wait("() => document.querySelectorAll('#events .event').length === 5", what="5 events")
    assert browser.evaluate(EVENTS) == [
        [1, "checkout"], [2, "install"], [3, "test.started"], [4, "test.finished"], [5, "deploy"]
    ]
    assert browser.evaluate("() => buildLog.feed.repeats") == 0
    page.browser.wait("() => buildLog.store.size === 3002", what="3002 lines")
    # The link of test.started: the first line written at or after it (3001) and two each side.
    browser.click("#events .event[data-sequence='3'] .event-lines")
    browser.wait("() => document.body.dataset.target === 'shown'", what="the event's lines")
    assert browser.evaluate(HIGHLIGHTED) == [2999, 3000, 3001, 3002]
    assert browser.evaluate(ON_SCREEN, 2999)
    assert browser.evaluate("() => location.hash") == "#L2999-L3003"
    # And an event's lines far back in the log: checkout, before line 1.
    browser.click("#events .event[data-sequence='1'] .event-lines")
    browser.wait("() => document.body.dataset.target === 'shown' && location.hash === '#L1-L3'", what="line 1")
    assert browser.evaluate(HIGHLIGHTED) == [1, 2, 3]
    assert browser.evaluate(ON_SCREEN, 1)
    assert page.connection() == "live"
    assert browser.errors() == []


def await_review(api: SimpleNamespace, build: build_pb2.Build) -> None:
    run(api, build)
    api.builds.TransitionBuild(
        build_pb2.TransitionBuildRequest(id=build.id, status=build_pb2.BUILD_STATUS_AWAITING_FEATURE_REVIEW)
    )


def test_the_review_gate_is_answered_from_the_page_and_a_refusal_is_said(
    browser: Browser, page_server: ServerProcess, database_url: str, api: SimpleNamespace, build: build_pb2.Build
):
    await_review(api, build)
    # A read-only token opens the page but may not review: the server's message is shown.
    reader = service_token(database_url, ["read"])
    page = LogPage(browser, http_base(page_server), build.id, reader)
    browser.wait("() => !document.getElementById('review').hidden", what="the review form")
    browser.click("#review button[data-decision='approve']")
    browser.wait("() => document.querySelector('.review-answer').dataset.state === 'refused'", what="the refusal")
    refusal = page.text(".review-answer")
    assert refusal.startswith("Not recorded: ") and "write" in refusal, refusal
    assert api.builds.GetBuild(build_pb2.GetBuildRequest(id=build.id)).build.status == build_pb2.BUILD_STATUS_AWAITING_FEATURE_REVIEW

    # A token allowed to review, naming the reviewer as a service must.
    page = LogPage(browser, http_base(page_server), build.id, page_server.token)
    browser.wait("() => !document.getElementById('review').hidden", what="the review form")
    browser.evaluate(
        "() => { document.getElementById('review-reviewer').value = 'ada@example.com';"
        " document.getElementById('review-comment').value = 'Looks right'; }"
    )
    browser.click("#review button[data-decision='approve']")
    # The answer to the call and the build's new status (WatchBuild) come in either order.
    browser.wait("() => document.querySelector('.review-answer').dataset.state === 'sent'", what="the review's answer")
    assert page.text(".review-answer") == "Approved: the build goes on."
    browser.wait("() => document.getElementById('status').textContent === 'running'", what="the build to run again")
    browser.wait("() => document.getElementById('review').hidden", what="the form to close")
    assert page.text("#reviews") == "feature review: approve by ada@example.com — “Looks right”"
    got = api.builds.GetBuild(build_pb2.GetBuildRequest(id=build.id)).build
    assert got.status == build_pb2.BUILD_STATUS_RUNNING
    assert [(r.decision, r.reviewer) for r in got.reviews] == [(build_pb2.REVIEW_DECISION_APPROVE, "ada@example.com")]
    assert browser.errors() == []


def test_a_screenshot_of_a_failed_step_with_times_tool_lines_events_and_a_linked_line(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build, tmp_path: Path
):
    """The second screenshot in docs/log-page.md; LOG_PAGE_FEATURES_SCREENSHOT=docs/log-page-features.png rewrites it."""
    import os

    from tests.support import ROOT

    run(api, build)
    events(api, build.id, "checkout")
    npm = struct_pb2.Struct()
    npm.update({"command": "npm ci", "exit_code": 0})
    tests_failed = struct_pb2.Struct()
    tests_failed.update({"command": "npm test", "exit_code": 1})
    api.logs.AppendBuildLogs(
        build_log_pb2.AppendBuildLogsRequest(
            build_id=build.id,
            entries=[
                line("$ git clone todo-app"),
                step("install", START, name="Install dependencies"),
                build_log_pb2.LogEntry(level=TOOL, message="added 312 packages in 4s", metadata=npm),
                step("install", END),
                step("test", START, name="Run the tests"),
                line("PASS src/list.test.ts"),
                line("FAIL src/item.test.ts", ERROR),
                line("  expected 'done' to be 'open'", ERROR),
                build_log_pb2.LogEntry(level=TOOL, message="1 failed, 11 passed", metadata=tests_failed),
                step("test", END),
            ],
        )
    )
    events(api, build.id, "tests.failed")
    api.builds.TransitionBuild(
        build_pb2.TransitionBuildRequest(id=build.id, status=build_pb2.BUILD_STATUS_AWAITING_FEATURE_REVIEW)
    )
    open_at(browser, page_server, build.id, "L7-L8")
    browser.wait("() => document.body.dataset.target === 'shown'", what="the linked lines")
    browser.wait("() => document.querySelectorAll('#events .event').length === 2", what="the events")
    browser.wait("() => !document.getElementById('review').hidden", what="the review form")
    browser.click("#times")
    browser.wait("() => document.querySelectorAll('#lines .time').length > 0", what="the times")
    assert rows_shown(browser) == [1, 2, 5, 6, 7, 8, 9, 10]
    target = ROOT / os.environ.get("LOG_PAGE_FEATURES_SCREENSHOT", tmp_path / "log-page-features.png")
    browser.screenshot(target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](log-page-features.png)" in (ROOT / "docs" / "log-page.md").read_text()
