"""The form of the opaque tokens this server issues (no I/O; the store keeps
their digests, server.auth checks them): a recognizable prefix and 32 random
bytes. They are high-entropy, so a plain SHA-256 is a safe way to store
them (no salt or slow hash needed: there is nothing to guess); only the
digest is kept, and a token is shown once, when it is made."""

from __future__ import annotations

import base64
import hashlib
import secrets

SERVICE_PREFIX = "bps_"
AGENT_PREFIX = "bpa_"
_BODY_CHARS = 43   # base64url of 32 bytes, unpadded


def new_token(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def digest(credential: str) -> bytes:
    """What is stored of a token, and the key of the verified-credential cache."""
    return hashlib.sha256(credential.encode()).digest()


def well_formed(token: str, prefix: str) -> bool:
    return shape_problem(token, prefix) is None


def shape_problem(token: str, prefix: str) -> str | None:
    """None when `token` has the form of the tokens made with `prefix`, else
    what is wrong with it, in words (never the token itself)."""
    if not token.startswith(prefix):
        return f"it does not start with {prefix}"
    body = token[len(prefix):]
    shape = f"a {prefix} token is {prefix} and {_BODY_CHARS} characters of A-Z, a-z, 0-9, - and _"
    if len(body) != _BODY_CHARS:
        return f"{shape}; this one has {len(body)} after {prefix}: copy the whole token"
    if not all(c.isascii() and (c.isalnum() or c in "-_") for c in body):
        return f"{shape}; this one has other characters: copy the token exactly"
    return None
