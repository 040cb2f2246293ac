"""The log page's search box in a real Chromium (tests/e2e/browser.py): the
whole log is searched by the server (SearchBuildLogs), the count streams in
with no 100-match limit, and next/previous draw a window around a match
however far it is from the rows drawn."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from buildplatform.v1 import build_pb2

from tests.e2e.browser import Browser
from tests.e2e.test_log_page import (  # noqa: F401  (browser and page_server are fixtures)
    ERROR,
    SEQUENCES,
    STORE,
    TOOL,
    append,
    browser,
    http_base,
    page_server,
    run,
)
from tests.support import ServerProcess

LINES = 100_000
NEEDLES = [i for i in range(1, LINES + 1) if i % 2000 == 42]   # 42, 2042, ..., 98042: 50 lines

COUNT = "() => ({text: document.getElementById('search-count').textContent, " \
        "state: document.getElementById('search-count').dataset.state, " \
        "total: Number(document.getElementById('search-count').dataset.total)})"
# The current match's row: its sequence, its marks' text, and whether it is on screen.
CURRENT = """() => {
    const row = document.querySelector('#lines .line.current');
    if (row === null) return null;
    const log = document.getElementById('log').getBoundingClientRect();
    const box = row.getBoundingClientRect();
    return {seq: Number(row.dataset.sequence), marks: [...row.querySelectorAll('mark')].map((m) => m.textContent),
            visible: box.top >= log.top && box.bottom <= log.bottom};
}"""


def message(i: int) -> tuple[int, str]:
    if i in NEEDLE_SET:
        return (ERROR, f"\x1b[31merror\x1b[0m in step {i}: the Needle was found")
    if i % 5 == 0:
        return (TOOL, f"\x1b[32m✓\x1b[0m test {i} passed")
    return (1, f"step {i}: compiling src/components/Widget{i}.tsx")


NEEDLE_SET = set(NEEDLES)


def type_query(chromium: Browser, text: str) -> None:
    chromium.evaluate(
        "(text) => { const box = document.getElementById('search-input'); box.focus(); box.value = text; "
        "box.dispatchEvent(new Event('input', {bubbles: true})); }",
        text,
    )


def key(chromium: Browser, name: str, shift: bool = False) -> None:
    chromium.evaluate(
        "([name, shift]) => document.getElementById('search-input').dispatchEvent("
        "new KeyboardEvent('keydown', {key: name, shiftKey: shift, bubbles: true}))",
        [name, shift],
    )


def wait_count(chromium: Browser, total: int) -> dict[str, Any]:
    chromium.wait(f"() => ({COUNT})().state === 'done' && ({COUNT})().total === {total}",
                 what=f"the search to count {total}", timeout=60)
    return dict(chromium.evaluate(COUNT))


def wait_current(chromium: Browser, seq: int) -> dict[str, Any]:
    chromium.wait(f"() => {{ const c = ({CURRENT})(); return c !== null && c.seq === {seq} && c.visible; }}",
                 what=f"line {seq} drawn, on screen, as the current match")
    return dict(chromium.evaluate(CURRENT))


def test_search_finds_a_line_far_from_the_rows_drawn_counts_every_match_and_steps_through_them(
    browser: Browser, page_server: ServerProcess, api: SimpleNamespace, build: build_pb2.Build  # noqa: F811
):
    run(api, build)
    for first in range(1, LINES + 1, 5000):
        append(api, build.id, *(message(i) for i in range(first, first + 5000)))
    browser.open(f"{http_base(page_server)}/builds/{build.id}#token={page_server.token}")
    browser.wait("() => performance.getEntriesByName('log-complete').length > 0", what="every line", timeout=120)
    assert browser.evaluate(STORE) == {"size": LINES, "repeats": 0, "gaps": 0}
    shown = browser.evaluate(SEQUENCES)
    assert shown[-1] == LINES and 42 not in shown   # the view is at the tail, far from the first match

    # A match near the start: found by the server, drawn and scrolled to.
    type_query(browser, "needle")   # the matches say "Needle": the box ignores case unless Aa is on
    count = wait_count(browser, len(NEEDLES))
    current = wait_current(browser, 42)
    assert current["marks"] == ["Needle"]
    assert count["text"] == f"1 of {len(NEEDLES)} matches"
    rows = browser.evaluate(SEQUENCES)
    assert rows == list(range(rows[0], rows[0] + len(rows))) and len(rows) <= 1500

    # Next and previous (Enter, Shift+Enter, the buttons), around the ends.
    key(browser, "Enter")
    wait_current(browser, 2042)
    key(browser, "Enter", shift=True)
    wait_current(browser, 42)
    key(browser, "Enter", shift=True)
    wait_current(browser, NEEDLES[-1])
    assert browser.evaluate(COUNT)["text"] == f"{len(NEEDLES)} of {len(NEEDLES)} matches"
    browser.click("#search-next")
    wait_current(browser, 42)
    for expected in NEEDLES[1:6]:
        browser.click("#search-next")
        wait_current(browser, expected)

    # Match case: none of them is lower case.
    browser.click("#search-case")
    browser.wait(f"() => ({COUNT})().state === 'done'", what="the case-sensitive search")
    assert browser.evaluate(COUNT)["text"] == "no matches"
    browser.click("#search-case")
    wait_count(browser, len(NEEDLES))

    # A common string: every match counted (no 100-match limit), streamed in.
    type_query(browser, "compiling")
    compiling = sum(1 for i in range(1, LINES + 1) if i not in NEEDLE_SET and i % 5 != 0)
    count = wait_count(browser, compiling)
    assert count["text"].endswith(f" of {compiling:,} matches"), count

    # A regular expression (RE2), with the level filter: only ERROR lines may match.
    browser.click("#search-regex")
    type_query(browser, r"step \d+: the")
    wait_count(browser, len(NEEDLES))
    browser.click("#levels input[value='3']")   # ERROR off: no line left to match
    browser.wait(f"() => ({COUNT})().state === 'done' && ({COUNT})().text === 'no matches'", what="no matches")
    browser.click("#levels input[value='3']")
    wait_count(browser, len(NEEDLES))

    # Escape clears the search and its highlight.
    key(browser, "Escape")
    browser.wait("() => document.getElementById('search-count').textContent === '' "
                 "&& document.querySelectorAll('#lines mark, #lines .current').length === 0", what="no highlight")
    print("\nlog page search, 100,000 lines:", json.dumps(browser.evaluate(COUNT)))
    assert browser.errors() == []
