"""Masking of secrets in logs and events, as pure functions (no I/O).

A build's registered secret values, and tokens of well-known shapes, are
replaced by MASK in every appended log line (message and metadata strings)
and event (data strings) before they are written: see docs/secrets.md for
what is promised and what is not.

What one registered value masks (`forms`):
- the value, and each of its lines that is long enough to be a secret on
  its own (MIN_SECRET_CHARS characters after trimming, with at least one
  letter or digit: a JSON secret's `{` or `},` line is never a pattern on
  its own, unlike GitHub runner #326);
- of each of those: base64 (standard and URL-safe alphabets) in the three
  alignments the value can have inside a longer encoded text (so
  base64("user:" + password) is caught), URL encoding (quote and
  quote_plus), JSON string escaping (ASCII and not), and HTML/XML escaping;
- of a multi-line value also its JSON-escaped and base64 forms as a whole.

How it finds them, fast whatever the number of patterns (pure Python, no
per-character loop): every pattern of at least 2w-1 characters contains one
of the text's w-character blocks that start at a multiple of w. The text's
blocks (one `re.findall`, in C) are intersected with the set of every
w-gram of every pattern (a set operation, in C); only the patterns of the
grams found are then searched for, with `str.find`, every occurrence,
overlapping ones included. So a batch with no secret in it costs two C
passes over its text, and the number of secrets hardly matters. Matches
are ranges; overlapping ranges are merged into one MASK (a secret equal to
a substring of another, or two secrets that overlap, leave nothing of
either), adjacent ones stay separate (Buildkite's replacer does the same).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_CHARS = 6          # shorter values are refused at registration
MAX_SECRET_BYTES = 16384      # a value's UTF-8 (a PEM key of 4096-bit RSA is ~3.3 KB)
MAX_SECRETS_PER_REQUEST = 100
MAX_SECRETS_PER_BUILD = 500
MAX_SECRET_BYTES_PER_BUILD = 65536   # all of a build's values together (each is indexed in ~10 forms)

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_WIDTHS = (16, 8, (MIN_SECRET_CHARS + 1) // 2)
_SEPARATOR = "\x00"           # never in a log line or JSON string (refused by validation)


@dataclass(frozen=True, slots=True)
class Shape:
    """A token shape masked even when nobody registered the token."""

    name: str
    pattern: str   # a Python regular expression, never matching NUL
    example: str   # a made-up token of this shape (the unit tests mask each)


def _token(prefix: str, rest: str, word: str = "A-Za-z0-9_") -> str:
    """A token that starts with `prefix` (its first two characters literal)
    not inside a longer word. The check of the character before is a
    lookbehind placed after those two characters: the expression still
    starts with a literal (so the engine skips quickly to where a token can
    start), and a run of repeated prefixes ("eyJeyJeyJ...") is refused at
    each start in constant time instead of being scanned again from each.
    Quantifiers are possessive and bounded for the same reason."""
    head = prefix[:2]
    return f"{head}(?<![{word}]{head}){prefix[2:]}{rest}"


# The one list of shapes (documented in docs/secrets.md, which a test keeps
# in sync with it).
SHAPES: tuple[Shape, ...] = (
    Shape("buildplatform service token", _token("bps_", "[A-Za-z0-9_-]{43}+(?![A-Za-z0-9_-])", "A-Za-z0-9_-"),
          "bps_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v"),
    Shape("buildplatform agent token", _token("bpa_", "[A-Za-z0-9_-]{43}+(?![A-Za-z0-9_-])", "A-Za-z0-9_-"),
          "bpa_" + "z9Y8x7W6v5U4t3S2r1Q0p9O8n7M6l5K4j3I2h1G0f9e"),
    Shape("JSON Web Token",
          _token("eyJ", r"[A-Za-z0-9_-]{8,8192}+\.eyJ[A-Za-z0-9_-]{8,65536}+\.[A-Za-z0-9_-]{0,8192}+", "A-Za-z0-9_-"),
          "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyXzEyMyJ9.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"),
    Shape("AWS access key id", _token("A", r"(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}+\b"),
          "AKIAIOSFODNN7EXAMPLE"),
    Shape("GitHub token", _token("gh", r"[pousr]_[A-Za-z0-9]{36,255}+\b"), "ghp_" + "a" * 18 + "B" * 18),
    Shape("GitHub fine-grained token", _token("github_pat_", r"[A-Za-z0-9_]{22,255}+\b"),
          "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTU"),
    Shape("GitLab token", _token("gl", r"(?:pat|dt|rt|ptt|cbt|oas)-[A-Za-z0-9_.-]{20,255}+"), "glpat-abcdefghij0123456789"),
    Shape("Slack token", _token("xox", r"[abposre]-[A-Za-z0-9-]{10,255}+"), "xoxb-123456789012-abcdefghijkl"),
    Shape("Stripe live key", _token("sk_live_", r"[A-Za-z0-9]{16,255}+\b"), "sk_live_" + "0123456789abcdefABCDEF"),
    Shape("Stripe restricted live key", _token("rk_live_", r"[A-Za-z0-9]{16,255}+\b"), "rk_live_" + "0123456789abcdefABCDEF"),
    Shape("Google API key", _token("AIza", "[0-9A-Za-z_-]{35}+(?![0-9A-Za-z_-])", "A-Za-z0-9_-"),
          "AIza" + "SyA-0123456789abcdefghijklmnopqrstu"),
    Shape("PEM private key",
          r"-----BEGIN[A-Z ]{0,30} PRIVATE KEY-----[^\x00]*?(?:-----END[A-Z ]{0,30} PRIVATE KEY-----|(?=\x00)|\Z)",
          "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n-----END RSA PRIVATE KEY-----"),
)

_SHAPES = re.compile("|".join(f"(?:{shape.pattern})" for shape in SHAPES))

# Literal pieces, one of which every shape's token holds: text with none of
# them (nearly every log line) skips the expression, for the price of a few
# substring searches in C.
_SHAPE_ANCHORS = (
    "bps_", "bpa_", "eyJ", "AKIA", "ASIA", "ABIA", "ACCA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
    "github_pat_", "glpat-", "gldt-", "glrt-", "glptt-", "glcbt-", "gloas-", "xox", "_live_", "AIza",
    "PRIVATE KEY-----",
)


def problem(value: str) -> str | None:
    """Why `value` cannot be registered (never quoting it), or None."""
    if "\x00" in value:
        return "must not contain the NUL character (U+0000)"
    if len(value.strip()) < MIN_SECRET_CHARS:
        return f"must be at least {MIN_SECRET_CHARS} characters (not counting surrounding spaces)"
    if len(value) > MAX_SECRET_BYTES // 4 and len(value.encode()) > MAX_SECRET_BYTES:
        return f"must be at most {MAX_SECRET_BYTES} bytes of UTF-8"
    return None


def _usable(line: str) -> bool:
    return len(line) >= MIN_SECRET_CHARS and any(c.isalnum() for c in line)


def _base64_forms(data: bytes) -> set[str]:
    """The base64 characters that encode `data` whatever comes before and
    after it: in each of the three alignments, the characters that depend
    on `data`'s bits only."""
    out = set()
    for pad, skip in ((0, 0), (1, 2), (2, 3)):
        total = pad + len(data)
        keep = 4 * (total // 3) + total % 3   # a last partial group: its first 1 or 2 characters
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\x00" * pad + data).decode()
            out.add(encoded[skip:keep])
    return out


def _encodings(text: str) -> set[str]:
    forms = {text, quote(text, safe=""), quote_plus(text, safe=""), html.escape(text, quote=True)}
    forms.add(json.dumps(text)[1:-1])
    forms.add(json.dumps(text, ensure_ascii=False)[1:-1])
    forms |= _base64_forms(text.encode())
    return forms


def forms(value: str) -> set[str]:
    """Every string that masking `value` replaces (see the module's doc)."""
    lines = [line.strip() for line in _LINE_BREAK.split(value)]
    found: set[str] = set()
    for line in lines:
        if _usable(line):
            found |= _encodings(line)
    if len(lines) > 1:
        for whole in {value, value.strip()}:
            found.add(json.dumps(whole)[1:-1])
            found.add(json.dumps(whole, ensure_ascii=False)[1:-1])
            found |= _base64_forms(whole.encode())
    return {form for form in found if len(form) >= MIN_SECRET_CHARS and _SEPARATOR not in form}


class _Tier:
    """Patterns of at least 2w-1 characters, found through w of their w-grams.

    The text is cut into w-character blocks at multiples of w. An
    occurrence of a pattern starting at t holds the block starting at the
    first multiple of w at or after t, whole (the pattern has at least
    2w-1 characters), and that block is the pattern's gram at offset
    0..w-1: so those w grams of each pattern are all the index needs."""

    def __init__(self, width: int, patterns: Iterable[str]) -> None:
        self.blocks = re.compile(f".{{{width}}}", re.DOTALL)
        grams: dict[str, list[str]] = {}
        for pattern in patterns:
            for start in range(width):
                grams.setdefault(pattern[start:start + width], []).append(pattern)
        self.grams = grams
        self.keys = frozenset(grams)

    def candidates(self, text: str) -> set[str]:
        blocks = self.blocks.findall(text)
        if self.keys.isdisjoint(blocks):
            return set()   # the common case: no block of the text is part of any pattern
        found = self.keys.intersection(blocks)
        out: set[str] = set()
        for gram in found:
            out.update(self.grams[gram])
        return out


class Masker:
    """Masks the secrets registered for one build, and the SHAPES unless off."""

    def __init__(self, values: Iterable[str] = (), *, shapes: bool = True) -> None:
        patterns: set[str] = set()
        for value in values:
            patterns |= forms(value)
        self.patterns = frozenset(patterns)
        self.shapes = shapes
        self.size = sum(map(len, patterns))   # characters held (the cache of maskers is bounded by it)
        # Wider blocks mean fewer of them to make and look up; a pattern
        # goes to the widest tier it is long enough for (2w-1 characters).
        self._tiers = []
        left = sorted(patterns, key=len)
        for width in _WIDTHS:
            mine = [p for p in left if len(p) >= 2 * width - 1]
            if mine:
                self._tiers.append(_Tier(width, mine))
                left = left[: len(left) - len(mine)]

    @property
    def idle(self) -> bool:
        """Whether this masker never changes anything."""
        return not self.patterns and not self.shapes

    def spans(self, text: str) -> list[tuple[int, int]]:
        """The ranges of `text` to mask, sorted, overlapping ones merged."""
        found: list[tuple[int, int]] = []
        candidates: set[str] = set()
        for tier in self._tiers:
            candidates |= tier.candidates(text)
        for pattern in candidates:
            size = len(pattern)
            at = text.find(pattern)
            while at >= 0:
                found.append((at, at + size))
                at = text.find(pattern, at + 1)
        if self.shapes and any(anchor in text for anchor in _SHAPE_ANCHORS):
            found.extend(match.span() for match in _SHAPES.finditer(text))
        if not found:
            return found
        found.sort()
        merged = [found[0]]
        for start, end in found[1:]:
            last_start, last_end = merged[-1]
            if start < last_end:
                if end > last_end:
                    merged[-1] = (last_start, end)
            else:
                merged.append((start, end))
        return merged

    def mask(self, text: str) -> str:
        spans = self.spans(text)
        if not spans:
            return text
        parts = []
        at = 0
        for start, end in spans:
            parts.append(text[at:start])
            parts.append(MASK)
            at = end
        parts.append(text[at:])
        return "".join(parts)

    def mask_all(self, texts: Sequence[str]) -> list[str] | None:
        """`texts` masked, or None when none of them holds anything to mask
        (the common case, decided in one pass over all of them)."""
        if self.idle or not texts:
            return None
        joined = _SEPARATOR.join(texts)
        if joined.count(_SEPARATOR) != len(texts) - 1:   # cannot happen after validation; stay exact anyway
            masked = [self.mask(text) for text in texts]
            return None if masked == list(texts) else masked
        spans = self.spans(joined)
        if not spans:
            return None
        parts = []
        at = 0
        for start, end in spans:
            parts.append(joined[at:start])
            parts.append(MASK)
            at = end
        parts.append(joined[at:])
        return "".join(parts).split(_SEPARATOR)
