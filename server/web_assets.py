"""The live build log page's files, answered to GET requests on the HTTP port.

The HTTP transport hands every GET it does not route itself to `serve(path)`.
The page is built from web/ by esbuild (`make web`) into web/dist:

    /builds/<build id>   dist/index.html: never cached (it names the assets of the newest build)
    /assets/<name>       dist/assets/<name>: names carry a content hash, so cached for a year

Nothing else is served: a name is matched against a strict pattern (no
slashes, no leading dot, a known extension) before the file system is asked,
and the file found must lie directly in dist/assets, so no path leads out of
it. The page takes its token from the URL fragment, which never reaches this
server. Its Content-Security-Policy keeps scripts, styles and connections to
this origin; framing stays allowed, since an embedding page may hand the
page its token (docs/log-page.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DIST = Path(__file__).resolve().parent.parent / "web" / "dist"

Response = tuple[int, dict[str, str], bytes]

PAGE = re.compile(r"/builds/[A-Za-z0-9_-]{1,64}")
ASSET = re.compile(r"/assets/([A-Za-z0-9_-][A-Za-z0-9_.-]{0,127})")
HASHED = re.compile(r".+-[A-Z0-9]{8}\.[a-z0-9.]+")  # esbuild's [name]-[hash]

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
}

# Every response: the page loads only its own scripts and styles and talks
# only to this origin; inline styles set through the DOM (ANSI 256 colours)
# are not inline markup and need no 'unsafe-inline'.
COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
PAGE_HEADERS = {
    **COMMON,
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-cache",
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'"
    ),
}
IMMUTABLE = "public, max-age=31536000, immutable"


def not_built(directory: Path) -> str:
    return (
        f"the build log page is not built ({directory / 'index.html'} is missing): "
        "run `make web` (needs Node 20 and npm), or `make run`, which builds it"
    )


@dataclass
class _Cached:
    mtime_ns: int
    size: int
    body: bytes


class WebAssets:
    """The files of one build directory, read once and again when they change."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: dict[Path, _Cached] = {}

    def missing(self) -> str | None:
        """Why the page cannot be served (one line saying how to build it), or None."""
        return None if (self.directory / "index.html").is_file() else not_built(self.directory)

    def serve(self, path: str) -> Response | None:
        if PAGE.fullmatch(path):
            body = self._read(self.directory / "index.html")
            if body is None:
                return 503, {**COMMON, "content-type": "text/plain; charset=utf-8"}, (
                    not_built(self.directory) + "\n"
                ).encode()
            return 200, dict(PAGE_HEADERS), body
        match = ASSET.fullmatch(path)
        if match is None:
            return None
        name = match.group(1)
        content_type = CONTENT_TYPES.get(Path(name).suffix)
        if content_type is None:
            return None
        assets = self.directory / "assets"
        file = assets / name
        if file.resolve().parent != assets.resolve():  # a symbolic link that leads elsewhere
            return None
        body = self._read(file)
        if body is None:
            return None
        cache = IMMUTABLE if HASHED.fullmatch(name) else "no-cache"
        return 200, {**COMMON, "content-type": content_type, "cache-control": cache}, body

    def _read(self, file: Path) -> bytes | None:
        try:
            stat = file.stat()
        except OSError:
            self._files.pop(file, None)
            return None
        if not file.is_file():
            return None
        cached = self._files.get(file)
        if cached is None or (cached.mtime_ns, cached.size) != (stat.st_mtime_ns, stat.st_size):
            try:
                cached = _Cached(stat.st_mtime_ns, stat.st_size, file.read_bytes())
            except OSError:
                return None
            self._files[file] = cached
        return cached.body


_assets = WebAssets(DIST)


def serve(path: str) -> Response | None:
    """The answer to `GET path` (status, headers, body), or None when no such page or file exists (404)."""
    return _assets.serve(path)


def missing() -> str | None:
    """Why the page cannot be served, as one line that says how to build it; None when it is built."""
    return _assets.missing()
