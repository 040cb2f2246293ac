"""User session JWTs of the identity provider (Clerk), verified offline.

Only asymmetric algorithms are accepted, and only the one that fits the key
that verifies (RS256 for an RSA key, ES256 for a P-256 key): a token that
says `alg: none`, or HS256 "signed" with the public key, is refused before
PyJWT sees it, and PyJWT is always given the one allowed algorithm.

Keys come from a PEM public key, or from the provider's JWKS URL: fetched
on first use, refreshed when older than `max_age_seconds`, and refetched
when a token names a kid that is not in the set (a key rotation), at most
once per `min_refetch_seconds` so that tokens with made-up kids cannot make
this server hammer the provider. Fetches run in a thread with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from server.domain.errors import Unauthenticated, Unavailable

log = logging.getLogger(__name__)

LEEWAY_SECONDS = 5.0   # clock skew tolerated on exp, nbf and iat
JWKS_BYTES = 1 << 20   # the most of a JWKS document read


def algorithm_for(key: Any) -> str | None:
    """The one algorithm a key may verify, or None for a key we do not use."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    return None


class PemKey:
    """One public key from a PEM file; the token's kid is not consulted."""

    def __init__(self, pem: bytes) -> None:
        self._key = load_pem_public_key(pem)
        if algorithm_for(self._key) is None:
            raise ValueError("the PEM key must be RSA or EC P-256")

    @classmethod
    def from_file(cls, path: str) -> PemKey:
        with open(path, "rb") as file:
            return cls(file.read())

    async def key(self, kid: str | None) -> Any:
        return self._key


def _download(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "buildplatform"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read(JWKS_BYTES + 1)
    if len(body) > JWKS_BYTES:
        raise ValueError(f"the JWKS is larger than {JWKS_BYTES} bytes")
    return body


class JwksKeys:
    """The keys of a JWKS URL, cached by kid (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        min_refetch_seconds: float = 30.0,
        max_age_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.min_refetch_seconds = min_refetch_seconds
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self.fetches = 0   # attempts so far (observability, and the tests)
        self._keys: dict[str | None, Any] = {}
        self._fetched: float | None = None    # when the keys in hand were fetched
        self._attempted: float | None = None  # when a fetch was last tried
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> Any:
        now = self.clock()
        if self._fetched is None or now - self._fetched >= self.max_age_seconds:
            await self._refresh(now)
        found = self._find(kid)
        if found is None and (self._attempted is None or now - self._attempted >= self.min_refetch_seconds):
            await self._refresh(now)
            found = self._find(kid)
        if found is None:
            raise Unauthenticated("UNKNOWN_KEY", f"kid {kid!r}" if kid and len(kid) <= 64 else "")
        return found

    def _find(self, kid: str | None) -> Any:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh(self, asked: float) -> None:
        async with self._lock:
            if self._attempted is not None and self._attempted >= asked:
                return   # another caller fetched while we waited for the lock
            self._attempted = self.clock()
            self.fetches += 1
            try:
                body = await asyncio.to_thread(_download, self.url, self.timeout)
                keys = _parse_jwks(body)
            except (OSError, ValueError) as error:
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                if self._keys:
                    log.warning("cannot refresh the JWKS from %s (%s): keeping the keys fetched before", self.url, reason)
                    return
                raise Unavailable(
                    f"the identity provider's keys (AUTH_JWKS_URL) cannot be fetched: {reason}; retry later",
                    retry_after=self.min_refetch_seconds,
                ) from None
            self._keys = keys
            self._fetched = self._attempted


def _parse_jwks(body: bytes) -> dict[str | None, Any]:
    try:
        data = json.loads(body)
        keyset = jwt.PyJWKSet.from_dict(data)
    except (json.JSONDecodeError, jwt.PyJWKSetError, jwt.InvalidKeyError, TypeError, AttributeError) as error:
        raise ValueError(f"not a usable JWKS ({error})") from None
    keys = {item.key_id: item.key for item in keyset.keys if algorithm_for(item.key) is not None}
    if not keys:
        raise ValueError("the JWKS holds no RSA or EC P-256 key")
    return keys


@dataclass(frozen=True, slots=True)
class Session:
    """What a verified session JWT says."""

    subject: str
    expire_time: float


# PyJWT's errors, most specific first, and why each refuses a token.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "EXPIRED"),
    (jwt.ImmatureSignatureError, "NOT_YET_VALID"),
    (jwt.InvalidIssuerError, "WRONG_ISSUER"),
    (jwt.InvalidAudienceError, "WRONG_AUDIENCE"),
    (jwt.InvalidSignatureError, "BAD_SIGNATURE"),
    (jwt.InvalidAlgorithmError, "BAD_SIGNATURE"),
)


class SessionVerifier:
    """Verifies session JWTs against `keys` (a JwksKeys or a PemKey)."""

    def __init__(
        self,
        keys: JwksKeys | PemKey,
        *,
        issuer: str,
        audience: str = "",
        authorized_parties: tuple[str, ...] = (),
        leeway: float = LEEWAY_SECONDS,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.authorized_parties = frozenset(authorized_parties)
        self.leeway = leeway

    async def verify(self, token: str) -> Session:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("MALFORMED", "not a JWT") from None
        algorithm = header.get("alg")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("MALFORMED", "kid is not a string")
        key = await self.keys.key(kid)
        allowed = algorithm_for(key)
        if allowed is None or algorithm != allowed:
            shown = algorithm if isinstance(algorithm, str) and len(algorithm) <= 16 else "?"
            raise Unauthenticated("BAD_SIGNATURE", f"algorithm {shown} is not accepted; this key verifies {allowed}")
        claims = self._decode(token, key, allowed)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("MALFORMED", "the token has no sub")
        if self.authorized_parties and claims.get("azp") not in self.authorized_parties:
            raise Unauthenticated("WRONG_AUTHORIZED_PARTY")
        return Session(subject=subject, expire_time=float(claims["exp"]))

    def _decode(self, token: str, key: Any, algorithm: str) -> Mapping[str, Any]:
        try:
            claims: Mapping[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience or None,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "sub"], "verify_aud": bool(self.audience)},
            )
        except jwt.MissingRequiredClaimError as error:
            raise Unauthenticated("MALFORMED", f"the token has no {error.claim}") from None
        except jwt.InvalidTokenError as error:
            for kind, reason in _REASONS:
                if isinstance(error, kind):
                    raise Unauthenticated(reason) from None
            raise Unauthenticated("MALFORMED", "not a valid JWT") from None
        return claims
