"""A real Chromium (Debian's, driven by playwright-core in node) for the tests.

`make test` installs what this needs: chromium (apt-get, when root) and the
driver's node modules (npm ci in tests/browser). Run without them, the
browser fixture fails with one line that says how to get them.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.support import ROOT

DRIVER = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PAGE_BUILT = ROOT / "web" / "dist" / "index.html"


def missing() -> str | None:
    """What the browser tests lack, as the one line that says how to get it."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}: run `apt-get install -y chromium` as root (or set CHROMIUM), then `make test`"
    if shutil.which("node") is None:
        return "node is not installed: the browser tests need Node 20 with npm"
    if not (DRIVER / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed: run `make test` (or `npm ci` in tests/browser)"
    if not PAGE_BUILT.is_file():
        return "the log page is not built: run `make web` (or `make test`, which builds it)"
    return None


class BrowserError(AssertionError):
    """What the page or the driver raised, with its stack."""


class Browser:
    """One Chromium with one page open at a time. Page functions are given as
    JavaScript source, `(arg) => ...`, and run in the page."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._proc = subprocess.Popen(
            ["node", str(DRIVER / "driver.mjs")],
            cwd=DRIVER,
            env={**os.environ, "CHROMIUM": CHROMIUM},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _call(self, op: str, **args: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        request_id = next(self._ids)
        self._proc.stdin.write(json.dumps({"id": request_id, "op": op, **args}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise BrowserError(f"the browser driver exited ({self._proc.wait()}) during {op}")
        answer = json.loads(line)
        assert answer["id"] == request_id
        if not answer["ok"]:
            raise BrowserError(f"{op} failed in the browser: {answer['error']}")
        return answer["value"]

    def open(self, url: str, *, init: str | None = None) -> None:
        """Load `url`; `init` is a script that runs before the page's own."""
        self._call("open", url=url, init=init)

    def open_html(self, html: str) -> None:
        """A page of the test's own (about:blank with this content), such as one that embeds the log page."""
        self._call("open", html=html)

    def evaluate(self, source: str, arg: Any = None, *, frame: str | None = None) -> Any:
        """What `source` returns in the page (or in its frame whose URL contains `frame`)."""
        return self._call("evaluate", source=source, arg=arg, frame=frame)

    def wait(
        self, source: str, arg: Any = None, *, what: str, timeout: float = 30, frame: str | None = None
    ) -> None:
        """Until `source` returns something truthy in the page, or fail saying `what` did not happen."""
        try:
            self._call("wait", source=source, arg=arg, timeout=int(timeout * 1000), frame=frame)
        except BrowserError as error:
            raise BrowserError(f"gave up waiting for {what}: {error}") from None

    def wheel(self, dy: float) -> None:
        self._call("wheel", dy=dy)

    def click(self, selector: str) -> None:
        self._call("click", selector=selector)

    def download(self, selector: str, path: Path, *, timeout: float = 60) -> dict[str, Any]:
        """Click `selector`, wait for the download it starts and save it at
        `path`: {"filename": the name the page gave, "failure": null or why}."""
        return dict(self._call("download", selector=selector, path=str(path), timeout=int(timeout * 1000)))

    def screenshot(self, path: Path) -> None:
        self._call("screenshot", path=str(path))

    def metrics(self) -> dict[str, float]:
        """Chromium's counters (Performance.getMetrics: JSHeapUsedSize, Nodes, ...) after a garbage collection."""
        return dict(self._call("metrics"))

    def errors(self) -> list[str]:
        return list(self._call("errors"))

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
