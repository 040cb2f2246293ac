"""The live build log page (/builds/<id> on the HTTP port) in a real Chromium.

Lines are appended through gRPC (the generated stubs, the admin token) and
read off the page the way a person sees them: one element per line, its
sequence number in `data-sequence`. The page's server is a process of the
test's own on a fixed HTTP port, so that it can be killed and started again
where the page expects it.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from buildplatform.v1 import build_log_pb2, build_pb2

from tests.e2e.browser import Browser, missing
from tests.support import ROOT, ServerProcess, free_port, running_server

INFO, WARN, ERROR, TOOL = (
    build_log_pb2.LOG_LEVEL_INFO,
    build_log_pb2.LOG_LEVEL_WARN,
    build_log_pb2.LOG_LEVEL_ERROR,
    build_log_pb2.LOG_LEVEL_TOOL,
)
SEQUENCES = "() => [...document.querySelectorAll('#lines [data-sequence]')].map((e) => Number(e.dataset.sequence))"
NOT_YET = "\u2013"  # an en dash: what the page shows for a time not reached yet
STORE = "() => ({size: buildLog.store.size, repeats: buildLog.store.repeats, gaps: buildLog.store.gaps})"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    lacking = missing()
    if lacking is not None:
        pytest.fail(lacking, pytrace=False)
    opened = Browser()
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def page_server(database_url: str) -> Iterator[ServerProcess]:
    """A server whose HTTP port serves the page (the session's server's database)."""
    with running_server(database_url, HTTP_ADDRESS=f"127.0.0.1:{free_port()}") as proc:
        yield proc


def http_base(server: ServerProcess) -> str:
    return f"http://127.0.0.1:{server.http_port}"


class LogPage:
    """The page of one build, open in the browser."""

    def __init__(self, browser: Browser, base: str, build_id: str, token: str) -> None:
        self.browser = browser
        self.url = f"{base}/builds/{build_id}"
        browser.open(f"{self.url}#token={token}")

    def sequences(self) -> list[int]:
        return list(self.browser.evaluate(SEQUENCES))

    def wait_for_lines(self, expected: list[int], timeout: float = 30) -> None:
        """Until the line elements carry exactly `expected`, in this order."""
        try:
            self.browser.wait(
                f"() => JSON.stringify(({SEQUENCES})()) === {json.dumps(json.dumps(expected, separators=(',', ':')))}",
                what=f"lines {expected[:3]}...{expected[-3:]}",
                timeout=timeout,
            )
        except AssertionError:
            shown = self.sequences()
            raise AssertionError(f"the page shows {len(shown)} lines: {shown[:5]}...{shown[-5:]}") from None

    def assert_every_line_once(self, last: int) -> None:
        """Walk the whole log as a person would, from its start (the Home key)
        down to its end, and check every window of rows on the way is in
        order without a repeat or a gap, and that together they hold 1..last."""
        walked = self.browser.evaluate(
            """async (last) => {
                const log = document.getElementById('log');
                const frame = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)));
                log.dispatchEvent(new KeyboardEvent('keydown', {key: 'Home'}));
                await frame();
                const windows = [];
                for (let step = 0; step < 10000; step++) {
                    const rows = [...document.querySelectorAll('#lines [data-sequence]')].map((e) => Number(e.dataset.sequence));
                    windows.push(rows);
                    if (rows[rows.length - 1] === last) break;
                    log.scrollTop = log.scrollHeight;
                    await frame();
                }
                return windows;
            }""",
            last,
        )
        covered = 0
        for rows in walked:
            assert rows == list(range(rows[0], rows[0] + len(rows))), f"rows out of order or repeated: {rows}"
            assert rows[0] <= covered + 1, f"lines {covered + 1}..{rows[0] - 1} were never shown"
            covered = max(covered, rows[-1])
        assert walked[0][0] == 1 and covered == last, (walked[0][:3], covered)

    def text(self, selector: str) -> str:
        return str(self.browser.evaluate("(s) => document.querySelector(s).textContent", selector))

    def connection(self) -> str:
        return str(self.browser.evaluate("() => document.body.dataset.connection"))


def append(api: SimpleNamespace, build_id: str, *messages: str | tuple[int, str]) -> int:
    """Append lines (a message, or (level, message)); the last sequence."""
    entries = [
        build_log_pb2.LogEntry(level=m[0], message=m[1]) if isinstance(m, tuple) else build_log_pb2.LogEntry(level=INFO, message=m)
        for m in messages
    ]
    response = api.logs.AppendBuildLogs(build_log_pb2.AppendBuildLogsRequest(build_id=build_id, entries=entries))
    return int(response.last_sequence)


def run(api: SimpleNamespace, build: build_pb2.Build) -> None:
    for status in (build_pb2.BUILD_STATUS_INITIALIZING, build_pb2.BUILD_STATUS_RUNNING):
        api.builds.TransitionBuild(build_pb2.TransitionBuildRequest(id=build.id, status=status))


def test_lines_appended_through_grpc_appear_once_each_and_in_order(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build
):
    run(api, build)
    append(api, build.id, *(f"backlog {i}" for i in range(1, 6)))
    page = LogPage(browser, http_base(page_server), build.id, page_server.token)
    page.wait_for_lines(list(range(1, 6)))
    total = 5
    for count in (10, 50, 50):
        total = append(api, build.id, *(f"live {i}" for i in range(total + 1, total + count + 1)))
        page.wait_for_lines(list(range(1, total + 1)))
    assert page.text("#lines [data-sequence='3'] .message") == "backlog 3"
    assert page.text("#status") == "running"
    assert browser.evaluate(STORE) == {"size": 115, "repeats": 0, "gaps": 0}
    # The token left the address bar (and the history) once read.
    assert browser.evaluate("() => location.hash") == ""
    assert page.connection() == "live"
    assert browser.errors() == []


def test_the_page_resumes_without_a_gap_or_a_repeat_when_its_server_is_killed_and_restarted(
    browser: Browser, database_url: str, api: SimpleNamespace, build: build_pb2.Build
):
    run(api, build)
    env = {"HTTP_ADDRESS": f"127.0.0.1:{free_port()}"}
    first = ServerProcess(database_url, env=env).start()
    second: ServerProcess | None = None
    try:
        page = LogPage(browser, http_base(first), build.id, first.token)
        page.wait_for_lines([])
        # An agent writes all along (through the session's server, on the same
        # database), before, during and after the page's server is gone.
        written: list[int] = []
        stop = threading.Event()

        def agent() -> None:
            n = 0
            while not stop.is_set():
                written.append(append(api, build.id, *(f"line {n + i}" for i in range(1, 11))))
                n += 10
                time.sleep(0.02)

        writer = threading.Thread(target=agent)
        writer.start()
        try:
            page.browser.wait("() => document.querySelectorAll('#lines [data-sequence]').length >= 200", what="200 lines")
            assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # mid-stream
            browser.wait("() => document.body.dataset.connection === 'reconnecting'", what="the page to say it reconnects")
            assert "reconnecting" in page.text("#connection")
            time.sleep(1)  # lines committed while nobody serves the page
            second = ServerProcess(database_url, env=env).start()
            time.sleep(1)
        finally:
            stop.set()
            writer.join()
        last = written[-1]
        browser.wait(f"() => buildLog.store.size === {last}", what=f"{last} lines")
        assert browser.evaluate(STORE) == {"size": last, "repeats": 0, "gaps": 0}
        page.assert_every_line_once(last)
        browser.wait("() => document.body.dataset.connection === 'live'", what="the page to be live again")
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0, second.log()[-3000:]


def test_ansi_colours_render_as_styles_and_nothing_in_a_line_becomes_markup(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build
):
    run(api, build)
    append(
        api,
        build.id,
        "\x1b[31mred\x1b[0m plain \x1b[1;32mbold green\x1b[0m",
        "\x1b[90mgrey\x1b[39m default \x1b[97;41mwhite on red\x1b[0m",
        "\x1b[38;5;208morange\x1b[0m \x1b[38;2;10;20;30mtruecolor\x1b[0m",
        "<img src=x onerror=\"document.title='owned'\"><script>document.title='owned'</script> & <b>not bold</b>",
        "\x1b[2K\x1b[1Gcleared\x1b]0;a window title\x07 and a bell\x07 done",
        "downloading 10%\rdownloading 100%",
    )
    page = LogPage(browser, http_base(page_server), build.id, page_server.token)
    page.wait_for_lines([1, 2, 3, 4, 5, 6])
    styles = browser.evaluate(
        """() => [...document.querySelectorAll('#lines .message')].map((m) => [...m.childNodes].map((n) => {
            const element = n.nodeType === 1 ? n : null;
            const style = getComputedStyle(element ?? m);
            return [n.textContent, style.color, style.fontWeight, style.backgroundColor];
        }))"""
    )
    default = browser.evaluate("() => getComputedStyle(document.querySelector('#lines .message')).color")
    assert styles[0] == [
        ["red", "rgb(241, 76, 76)", "400", "rgba(0, 0, 0, 0)"],
        [" plain ", default, "400", "rgba(0, 0, 0, 0)"],
        ["bold green", "rgb(35, 209, 139)", "700", "rgba(0, 0, 0, 0)"],
    ]
    assert styles[1] == [
        ["grey", "rgb(128, 128, 128)", "400", "rgba(0, 0, 0, 0)"],
        [" default ", default, "400", "rgba(0, 0, 0, 0)"],
        ["white on red", "rgb(255, 255, 255)", "400", "rgb(205, 49, 49)"],
    ]
    assert [s[1] for s in styles[2] if s[0].strip()] == ["rgb(255, 135, 0)", "rgb(10, 20, 30)"]
    # Markup in a message is text: no element was made of it, no script ran.
    assert page.text("#lines [data-sequence='4'] .message") == (
        "<img src=x onerror=\"document.title='owned'\"><script>document.title='owned'</script> & <b>not bold</b>"
    )
    assert browser.evaluate("() => document.querySelectorAll('#lines img, #lines script, #lines b').length") == 0
    assert "owned" not in browser.evaluate("() => document.title")
    # Other escape sequences are dropped; other control characters shown as control pictures.
    assert page.text("#lines [data-sequence='5'] .message") == "cleared and a bell\u2407 done"
    assert page.text("#lines [data-sequence='6'] .message") == "downloading 100%"
    assert browser.errors() == []


def test_levels_are_shown_and_the_filter_hides_and_brings_back_lines_in_order(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build
):
    run(api, build)
    levels = [INFO, WARN, INFO, ERROR, TOOL, INFO, ERROR, WARN]
    append(api, build.id, *((level, f"line {i}") for i, level in enumerate(levels, 1)))
    page = LogPage(browser, http_base(page_server), build.id, page_server.token)
    page.wait_for_lines(list(range(1, 9)))
    shown = browser.evaluate("() => [...document.querySelectorAll('#lines .level')].map((e) => e.textContent)")
    assert shown == ["INFO", "WARN", "INFO", "ERROR", "TOOL", "INFO", "ERROR", "WARN"]
    counts = browser.evaluate("() => [...document.querySelectorAll('#levels label')].map((l) => l.textContent.trim())")
    assert counts == ["INFO 3", "WARN 2", "ERROR 2", "TOOL 1"]

    browser.click("#levels input[value='1']")  # hide INFO
    page.wait_for_lines([2, 4, 5, 7, 8])
    browser.click("#levels input[value='4']")  # and TOOL
    page.wait_for_lines([2, 4, 7, 8])
    append(api, build.id, (INFO, "hidden"), (ERROR, "shown"))  # live lines are filtered too
    page.wait_for_lines([2, 4, 7, 8, 10])
    browser.click("#levels input[value='1']")
    browser.click("#levels input[value='4']")
    page.wait_for_lines(list(range(1, 11)))


def test_the_page_shows_status_timings_and_the_review_gate_live(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build
):
    page = LogPage(browser, http_base(page_server), build.id, page_server.token)
    browser.wait("() => document.getElementById('status').textContent === 'pending'", what="PENDING")
    assert page.text("#started") == NOT_YET and page.text("#elapsed") == "not started"
    run(api, build)
    api.builds.TransitionBuild(
        build_pb2.TransitionBuildRequest(id=build.id, status=build_pb2.BUILD_STATUS_AWAITING_DESIGN_REVIEW)
    )
    browser.wait("() => !document.getElementById('gate').hidden", what="the review gate")
    assert page.text("#gate").startswith("Waiting for design review since ")
    assert page.text("#status") == "awaiting design review"
    assert page.text("#started") != NOT_YET
    api.builds.ReviewBuild(
        build_pb2.ReviewBuildRequest(
            id=build.id, decision=build_pb2.REVIEW_DECISION_APPROVE, reviewer="ada@example.com", comment="Ship it"
        )
    )
    browser.wait("() => document.getElementById('gate').hidden", what="the gate to close")
    assert page.text("#status") == "running"
    assert page.text("#reviews") == "design review: approve by ada@example.com — “Ship it”"
    append(api, build.id, "done")
    api.builds.TransitionBuild(build_pb2.TransitionBuildRequest(id=build.id, status=build_pb2.BUILD_STATUS_COMPLETED))
    browser.wait("() => document.body.dataset.connection === 'done'", what="the streams to end with the build")
    assert page.text("#status") == "completed"
    assert page.text("#finished") != NOT_YET
    assert page.text("#connection") == "build ended · log complete"
    assert page.sequences() == [1]


def test_the_view_follows_the_end_until_the_person_scrolls_up(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build
):
    run(api, build)
    last = append(api, build.id, *(f"line {i} " + "long words " * (i % 40) for i in range(1, 251)))
    page = LogPage(browser, http_base(page_server), build.id, page_server.token)
    page.wait_for_lines(list(range(1, last + 1)))
    at_end = "() => { const log = document.getElementById('log'); return log.scrollHeight - log.scrollTop - log.clientHeight <= 2; }"
    browser.wait(at_end, what="the view at the end")
    assert browser.evaluate("() => document.getElementById('jump').hidden")

    browser.wheel(-1500)
    browser.wait("() => !buildLog.following", what="the view to stop following")
    top = browser.evaluate("() => document.getElementById('log').scrollTop")
    last = append(api, build.id, *(f"new {i}" for i in range(10)))
    browser.wait("() => document.getElementById('jump').textContent.startsWith('↓ 10 new lines')", what="the count of new lines")
    assert browser.evaluate("() => document.getElementById('log').scrollTop") == top  # it stayed where the person is

    browser.click("#jump")
    browser.wait(at_end, what="the view back at the end")
    assert page.sequences()[-1] == last
    assert browser.evaluate("() => buildLog.following")


def test_the_embedding_page_gives_the_token_and_a_new_one_when_the_server_refuses_it(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build
):
    run(api, build)
    append(api, build.id, "one", "two")
    frame = f"{http_base(page_server)}/builds/{build.id}"
    # The embedding page answers the first request with a token the server
    # refuses, and the next with a good one.
    browser.open_html(
        f"""<iframe src="{frame}" width="1000" height="600"></iframe>
        <script>
          const tokens = ["bps_not-a-real-token", {json.dumps(page_server.token)}];
          window.asked = 0;
          window.addEventListener("message", (event) => {{
            if (event.data?.type !== "buildplatform:token-request") return;
            event.source.postMessage({{type: "buildplatform:token", token: tokens[Math.min(window.asked++, 1)]}}, "*");
          }});
        </script>"""
    )
    browser.wait(f"() => JSON.stringify(({SEQUENCES})()) === '[1,2]'", what="the lines in the frame", frame=frame)
    assert browser.evaluate("() => window.asked") >= 2


def test_without_a_token_the_page_says_how_to_give_one(
    browser: Browser, page_server: ServerProcess, build: build_pb2.Build
):
    browser.open(f"{http_base(page_server)}/builds/{build.id}")
    browser.wait("() => !document.getElementById('problem').hidden", what="the page to say what is missing")
    problem = browser.evaluate("() => document.getElementById('problem').textContent")
    assert "#token=" in problem and ".data/admin-token" in problem


def test_a_refused_token_and_a_build_that_does_not_exist_are_said_and_not_retried(
    browser: Browser, page_server: ServerProcess, build: build_pb2.Build
):
    failed = "() => document.body.dataset.connection === 'failed'"
    LogPage(browser, http_base(page_server), build.id, "bps_not-a-real-token")
    browser.wait(failed, what="the page to give up")
    assert browser.evaluate("() => document.getElementById('connection').textContent").startswith("the token was refused: ")

    LogPage(browser, http_base(page_server), "c000000000000000000000000", page_server.token)
    browser.wait(failed, what="the page to give up")
    assert "not found" in browser.evaluate("() => document.getElementById('connection').textContent")
    time.sleep(1.5)  # longer than the first pause before a retry
    assert browser.evaluate(failed)


# What a person reads of the page's state: the status badge, the connection
# indicator (and data-connection), the line above the log, the problem box.
SHOWN = """() => ({
    badge: document.getElementById('status').textContent,
    indicator: document.getElementById('connection').textContent,
    connection: document.body.dataset.connection,
    above: document.getElementById('above').textContent,
    problem: document.getElementById('problem').hidden ? null : document.getElementById('problem').textContent,
})"""
STILL_STARTING = ("loading…", "connecting…", "loading the log…")


def shown(browser: Browser, frame: str | None = None) -> dict[str, Any]:
    """SHOWN, once the page settled: none of it may still say it is starting."""
    now = dict(browser.evaluate(SHOWN, frame=frame))
    assert not {now["badge"], now["indicator"], now["above"]} & set(STILL_STARTING), now
    return now


def test_every_state_of_the_page_says_so_in_words(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, make_build: Any
):
    base = http_base(page_server)
    settled = "() => !['connecting', undefined].includes(document.body.dataset.connection)"

    # No token: nothing can be shown, and every part of the page says so.
    empty = make_build()
    browser.open(f"{base}/builds/{empty.id}")
    browser.wait(settled, what="the page to say it has no token")
    now = shown(browser)
    assert now["connection"] == "failed" and now["indicator"] == "not connected: no token", now
    assert now["badge"] == "status unknown" and now["above"] == "no lines shown: no token", now
    assert "#token=" in now["problem"], now

    # A token the server refuses (one that starts with bps_ but is not one).
    LogPage(browser, base, empty.id, "bps_wrongtoken123")
    browser.wait("() => document.body.dataset.connection === 'failed'", what="the page to give up")
    browser.wait("() => document.getElementById('status').textContent !== 'loading…'", what="the badge to change")
    now = shown(browser)
    assert now["indicator"].startswith("the token was refused: ") and "43 characters" in now["indicator"], now
    assert now["badge"] == "status unknown", now
    assert now["above"].startswith("no lines shown: the token was refused"), now

    # Served: a pending build without lines yet, then a finished one whose log is empty.
    page = LogPage(browser, base, empty.id, page_server.token)
    browser.wait("() => document.body.dataset.connection === 'live'", what="the page to be live")
    browser.wait("() => document.getElementById('above').textContent.startsWith('no lines yet')", what="no lines yet")
    assert page.text("#status") == "pending" and page.text("#connection") == "live"
    api.builds.CancelBuild(build_pb2.CancelBuildRequest(id=empty.id))
    browser.wait("() => document.body.dataset.connection === 'done'", what="the streams to end with the build")
    assert (page.text("#status"), page.text("#connection")) == ("cancelled", "build ended · log complete")
    LogPage(browser, base, empty.id, page_server.token)   # opened on the finished build
    browser.wait("() => document.body.dataset.connection === 'done'", what="the ended build")
    browser.wait("() => document.getElementById('above').textContent === 'the log is empty'", what="an empty log")

    # Embedded, while the embedding page has not given a token yet.
    frame = f"{base}/builds/{empty.id}"
    browser.open_html(f'<iframe src="{frame}" width="1000" height="600"></iframe>')
    browser.wait("() => document.body.dataset.connection === 'waiting'", what="the frame to wait", frame=frame)
    now = shown(browser, frame)
    assert now["indicator"] == "waiting for a token from the embedding page…" and now["badge"] == "status unknown", now
    assert now["above"] == "no lines shown until the embedding page gives a token", now


def test_the_http_port_serves_the_page_and_its_hashed_assets_and_nothing_else(page_server: ServerProcess, build: build_pb2.Build):
    def get(path: str) -> tuple[int, dict[str, str], bytes]:
        try:
            with urllib.request.urlopen(http_base(page_server) + path, timeout=10) as answer:
                return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, {}, b""

    status, headers, body = get(f"/builds/{build.id}")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache" and "script-src 'self'" in headers["content-security-policy"]
    script = body.decode().split('<script type="module" src="', 1)[1].split('"', 1)[0]
    status, headers, _ = get(script)
    assert status == 200 and headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    for path in ("/assets/../index.html", "/assets/%2e%2e/index.html", "/builds/", "/web/dist/index.html", "/nothing"):
        assert get(path)[0] == 404, path


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_a_screenshot_of_a_running_build_shows_its_log(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build, tmp_path: Path
):
    """The screenshot in docs/log-page.md, taken here; with LOG_PAGE_SCREENSHOT=docs/log-page.png it is rewritten."""
    run(api, build)
    append(api, build.id, "$ generate the design from the app spec", (TOOL, "wrote design/todo-app.fig (6 screens)"))
    api.builds.TransitionBuild(
        build_pb2.TransitionBuildRequest(id=build.id, status=build_pb2.BUILD_STATUS_AWAITING_DESIGN_REVIEW)
    )
    api.builds.ReviewBuild(
        build_pb2.ReviewBuildRequest(
            id=build.id, decision=build_pb2.REVIEW_DECISION_APPROVE, reviewer="ada@example.com",
            comment="Looks good, keep the dark theme",
        )
    )
    lines: list[str | tuple[int, str]] = [
        "$ npm ci",
        (TOOL, "added 312 packages in 4s"),
        "$ npm run build",
        (TOOL, "\x1b[1mvite v5.4.2\x1b[22m \x1b[32mbuilding for production...\x1b[39m"),
        (TOOL, "\x1b[32m✓\x1b[39m 48 modules transformed."),
        (WARN, "\x1b[33m(!) Some chunks are larger than 500 kB after minification.\x1b[39m Consider dynamic import() "
               "to code-split the application, or adjust the chunk size limit with build.chunkSizeWarningLimit."),
        (TOOL, "\x1b[90mdist/\x1b[39m\x1b[36massets/index-4f2a9c.js\x1b[39m  \x1b[1m\x1b[33m612.40 kB\x1b[39m\x1b[22m"),
        "$ npm test",
        (TOOL, " \x1b[32m✓\x1b[39m src/todos.test.ts \x1b[90m(12 tests)\x1b[39m \x1b[33m31ms\x1b[39m"),
        (ERROR, " \x1b[31m✗\x1b[39m src/sync.test.ts > syncs offline edits: \x1b[31mexpected 2 to be 3\x1b[39m"),
        (INFO, "retrying the failed test with a fresh database"),
        (TOOL, " \x1b[32m✓\x1b[39m src/sync.test.ts \x1b[90m(4 tests)\x1b[39m \x1b[33m58ms\x1b[39m"),
        (TOOL, " \x1b[1mTest Files\x1b[22m  \x1b[1;32m2 passed\x1b[0m\x1b[90m (2)\x1b[39m"),
        "deploying preview to https://todo-preview.example.com",
    ]
    append(api, build.id, *lines)
    last = append(api, build.id, "$ npx playwright test", *(
        (TOOL, f" \x1b[32m✓\x1b[39m {i} [chromium] \u203a todos.spec.ts:{10 * i}:3 \u203a {name} \x1b[90m({120 + 37 * i}ms)\x1b[39m")
        for i, name in enumerate(
            ["adds a todo", "ticks a todo off", "edits a todo", "filters done todos", "syncs across tabs",
             "keeps todos offline", "clears completed todos"], 1)
    ), (TOOL, " \x1b[32m7 passed\x1b[39m \x1b[90m(4.1s)\x1b[39m"), "asking for the feature review")
    api.builds.TransitionBuild(
        build_pb2.TransitionBuildRequest(id=build.id, status=build_pb2.BUILD_STATUS_AWAITING_FEATURE_REVIEW)
    )
    page = LogPage(browser, http_base(page_server), build.id, page_server.token)
    page.wait_for_lines(list(range(1, last + 1)))
    browser.wait("() => !document.getElementById('gate').hidden", what="the review gate")
    target = ROOT / os.environ.get("LOG_PAGE_SCREENSHOT", tmp_path / "log-page.png")
    browser.screenshot(target)
    assert _png_size(target) == (1280, 800)
    # The committed one is what the docs show.
    assert "](log-page.png)" in (ROOT / "docs" / "log-page.md").read_text()
    assert "](docs/log-page.png)" in (ROOT / "README.md").read_text()
    assert _png_size(ROOT / "docs" / "log-page.png") == (1280, 800)


LINES_100K = 100_000


def test_a_build_of_100000_lines_opens_at_its_tail_and_stays_responsive(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build
):
    """The figures in docs/log-page.md (printed with -s)."""
    run(api, build)
    for first in range(1, LINES_100K + 1, 5000):
        append(
            api,
            build.id,
            *(
                (ERROR, f"\x1b[31merror\x1b[0m in step {i}") if i % 97 == 0
                else (TOOL, f"\x1b[32m✓\x1b[0m test {i} passed \x1b[90m({i % 300} ms)\x1b[0m") if i % 5 == 0
                else f"step {i}: compiling src/components/Widget{i}.tsx"
                for i in range(first, first + 5000)
            ),
        )
    long_tasks = (
        "window.longTasks = []; new PerformanceObserver((list) => { for (const e of list.getEntries()) "
        "window.longTasks.push(e.duration); }).observe({type: 'longtask', buffered: true});"
    )
    browser.open(f"{http_base(page_server)}/builds/{build.id}#token={page_server.token}", init=long_tasks)
    browser.wait("() => performance.getEntriesByName('log-complete').length > 0", what="every line", timeout=120)
    figures: dict[str, Any] = browser.evaluate(
        """() => ({
            tail_painted_ms: performance.getEntriesByName('tail-painted')[0].startTime,
            all_lines_ms: performance.getEntriesByName('log-complete')[0].startTime,
            longest_task_ms: Math.max(0, ...window.longTasks),
            rows: document.querySelectorAll('#lines [data-sequence]').length,
            elements: document.getElementsByTagName('*').length,
        })"""
    )
    assert browser.evaluate(STORE) == {"size": LINES_100K, "repeats": 0, "gaps": 0}
    shown = browser.evaluate(SEQUENCES)
    assert shown == list(range(LINES_100K - len(shown) + 1, LINES_100K + 1))  # the end, in order
    assert figures["rows"] <= 1500 and figures["elements"] < 10_000

    # A filter over 100,000 lines, to the next frame.
    figures["filter_ms"] = browser.evaluate(
        """async () => {
            const start = performance.now();
            document.querySelector("#levels input[value='1']").click();
            await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)));
            return performance.now() - start;
        }"""
    )
    assert browser.evaluate("() => document.querySelectorAll('#lines .level-info').length") == 0
    browser.click("#levels input[value='1']")
    # The window is drawn again for the new filter on the next frames.
    browser.wait("() => document.querySelectorAll('#lines .level-info').length > 0", what="INFO lines shown again")

    # Scrolling up through them: each step renders earlier lines; the DOM stays capped.
    per_step, scrolled = browser.evaluate(
        """async () => {
            const log = document.getElementById('log');
            const first = () => Number(document.querySelector('#lines [data-sequence]').dataset.sequence);
            const before = first();
            const start = performance.now();
            for (let i = 0; i < 20; i++) {
                log.scrollTop = 0;
                await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)));
            }
            return [(performance.now() - start) / 20, before - first()];
        }"""
    )
    figures["scroll_up_step_ms"] = per_step
    assert scrolled >= 20 * 200
    rows = browser.evaluate(SEQUENCES)
    assert rows == list(range(rows[0], rows[0] + len(rows))) and len(rows) <= 1500
    metrics = browser.metrics()
    figures["rows_scrolled_up"] = len(rows)
    figures["dom_nodes_scrolled_up"] = metrics["Nodes"]  # Chromium's count: elements and text nodes
    figures["js_heap_mb"] = metrics["JSHeapUsedSize"] / 2**20  # after a garbage collection, 100,000 lines held
    assert figures["js_heap_mb"] < 150

    # Live: back at the end, 10,000 more lines at about 5,000 a second.
    browser.click("#jump")
    browser.evaluate("() => { window.longTasks.length = 0; }")
    appended = LINES_100K
    for _ in range(20):
        began = time.monotonic()
        appended = append(api, build.id, *(f"live line {appended + i}" for i in range(1, 501)))
        time.sleep(max(0.0, 0.1 - (time.monotonic() - began)))
    done = time.monotonic()
    browser.wait("(last) => document.querySelector(`#lines [data-sequence='${last}']`)", appended, what="the last live line")
    figures["live_last_line_ms"] = (time.monotonic() - done) * 1000  # after its append returned (an upper bound: one driver round trip)
    figures["live_longest_task_ms"] = browser.evaluate("() => Math.max(0, ...window.longTasks)")
    assert browser.evaluate(STORE) == {"size": LINES_100K + 10_000, "repeats": 0, "gaps": 0}
    assert browser.evaluate("() => buildLog.following")
    print("\nlog page, 100,000 lines:", json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()}))


# --- the Download button ---------------------------------------------------------------

DOWNLOADED = [
    (INFO, "\x1b[1;32mCompiling\x1b[0m app v0.1.0"),
    (WARN, "\x1b[33mwarning\x1b[0m: caf\u00e9 \U0001f680 \x1b]8;;https://example.com\x1b\\docs\x1b]8;;\x1b\\"),
    (INFO, "two\nlines"),
]


def curl_text(server: ServerProcess, build_id: str, query: str) -> bytes:
    """What curl gets from GET /builds/{id}/logs.txt with `query`."""
    return subprocess.run(
        ["curl", "-sS", "-f", "-H", f"Authorization: Bearer {server.token}",
         f"{http_base(server)}/builds/{build_id}/logs.txt{query}"],
        capture_output=True, check=True, timeout=60,
    ).stdout


def test_download_saves_the_same_bytes_as_curl(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build, tmp_path: Path,
):
    run(api, build)
    last = append(api, build.id, *DOWNLOADED, *(f"line {i}" for i in range(4, 2001)))
    page = LogPage(browser, http_base(page_server), build.id, page_server.token)
    browser.wait(f"() => buildLog.store.size === {last}", what=f"{last} lines")
    # One click; ANSI stripped by default.
    saved = browser.download("#download", tmp_path / "stripped.log")
    assert saved == {"filename": f"{build.id}.log", "failure": None}
    stripped = curl_text(page_server, build.id, "?ansi=strip")
    assert (tmp_path / "stripped.log").read_bytes() == stripped
    assert stripped.startswith("Compiling app v0.1.0\nwarning: caf\u00e9 \U0001f680 docs\ntwo\nlines\n".encode())
    # With colour codes: the messages as written.
    browser.click("#download-ansi")
    saved = browser.download("#download", tmp_path / "kept.log")
    assert saved["failure"] is None
    kept = curl_text(page_server, build.id, "")
    assert (tmp_path / "kept.log").read_bytes() == kept
    assert kept.startswith(b"\x1b[1;32mCompiling")
    assert page.text("#download") == "Download"     # ready for another click
    assert browser.errors() == []


def test_a_refused_download_is_said_in_words(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build,
):
    append(api, build.id, "one line")
    LogPage(browser, http_base(page_server), build.id, "bp_not_a_token")
    browser.wait("() => document.getElementById('download') !== null", what="the button")
    browser.click("#download")
    browser.wait("() => !document.getElementById('problem').hidden", what="the problem to be shown")
    text = browser.evaluate("() => document.getElementById('problem').textContent")
    assert text.startswith("The download failed: ") and "token" in text, text
