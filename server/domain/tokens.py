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
    body = token[len(prefix):]
    return (
        token.startswith(prefix)
        and len(body) == _BODY_CHARS
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in body)
    )
