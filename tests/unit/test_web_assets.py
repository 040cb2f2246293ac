"""The build log page's files, as the HTTP transport asks for them (server.web_assets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.web_assets import WebAssets


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """A build directory like the one `make web` writes, with a secret beside it."""
    (tmp_path / "secret.txt").write_text("not for the web")
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>Build log</title>")
    (dist / "assets" / "main-AB12CD34.js").write_text("console.log(1)")
    (dist / "assets" / "main-AB12CD34.js.map").write_text("{}")
    (dist / "assets" / "style-ZZ99YY88.css").write_text("body{}")
    (dist / "assets" / "unhashed.js").write_text("1")
    (dist / "assets" / ".hidden.js").write_text("1")
    (dist / "assets" / "notes.txt").write_text("1")
    (dist / "assets" / "escape-AB12CD34.js").symlink_to(tmp_path / "secret.txt")
    return dist


def test_a_build_page_is_the_index_never_cached_with_a_policy_that_keeps_it_to_its_origin(dist: Path):
    served = WebAssets(dist).serve("/builds/cmwvqzsw30002ms7d692rnfud")
    assert served is not None
    status, headers, body = served
    assert status == 200 and body == b"<!doctype html><title>Build log</title>"
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "connect-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/assets/main-AB12CD34.js", "text/javascript; charset=utf-8"),
        ("/assets/style-ZZ99YY88.css", "text/css; charset=utf-8"),
        ("/assets/main-AB12CD34.js.map", "application/json; charset=utf-8"),
    ],
)
def test_hashed_assets_are_served_with_their_type_and_cached_for_a_year(dist: Path, path: str, content_type: str):
    served = WebAssets(dist).serve(path)
    assert served is not None
    status, headers, _ = served
    assert status == 200
    assert headers["content-type"] == content_type
    assert headers["cache-control"] == "public, max-age=31536000, immutable"


def test_an_asset_without_a_content_hash_is_revalidated(dist: Path):
    served = WebAssets(dist).serve("/assets/unhashed.js")
    assert served is not None and served[1]["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/builds/",
        "/builds",
        "/builds/abc/",
        "/builds/abc/def",
        "/builds/../secret.txt",
        "/index.html",
        "/assets/",
        "/assets/../index.html",
        "/assets/..",
        "/assets/../../secret.txt",
        "/assets//etc/passwd",
        "/assets/..%2F..%2Fsecret.txt",
        "/assets/.hidden.js",
        "/assets/notes.txt",  # an extension the page never uses
        "/assets/missing-AB12CD34.js",
        "/assets/escape-AB12CD34.js",  # a symbolic link out of assets/
        "/assets/main-AB12CD34.js\x00.png",
        "/assets\\..\\secret.txt",
        "/builds/" + "a" * 65,
    ],
)
def test_nothing_outside_the_page_and_its_assets_is_served(dist: Path, path: str):
    assert WebAssets(dist).serve(path) is None


def test_a_rebuilt_asset_is_served_as_it_is_now(dist: Path):
    assets = WebAssets(dist)
    assert assets.serve("/assets/unhashed.js") is not None
    (dist / "assets" / "unhashed.js").write_text("2 and longer")
    served = assets.serve("/assets/unhashed.js")
    assert served is not None and served[2] == b"2 and longer"
    (dist / "assets" / "unhashed.js").unlink()
    assert assets.serve("/assets/unhashed.js") is None


def test_a_page_that_is_not_built_answers_503_saying_how_to_build_it(tmp_path: Path):
    assets = WebAssets(tmp_path / "dist")
    said = assets.missing()
    assert said is not None and "make web" in said and "\n" not in said
    served = assets.serve("/builds/abc")
    assert served is not None
    status, headers, body = served
    assert status == 503 and headers["content-type"] == "text/plain; charset=utf-8"
    assert body.decode() == said + "\n"
    assert assets.serve("/assets/main-AB12CD34.js") is None


def test_a_built_page_is_not_missing(dist: Path):
    assert WebAssets(dist).missing() is None
