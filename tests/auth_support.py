"""Test helpers for authentication: real keys, real JWTs, a real JWKS endpoint."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support import LocalHandler, local_http_server

ISSUER = "https://clerk.example.test"
ORIGIN = "https://app.example.test"


@dataclass
class SigningKey:
    """A private key made for the test, its kid and algorithm."""

    private: Any
    kid: str
    algorithm: str

    @classmethod
    def rsa(cls, kid: str | None = None) -> SigningKey:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid or f"rsa-{uuid.uuid4().hex[:8]}", "RS256")

    @classmethod
    def ec(cls, kid: str | None = None) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()), kid or f"ec-{uuid.uuid4().hex[:8]}", "ES256")

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.RSAAlgorithm if self.algorithm == "RS256" else jwt.algorithms.ECAlgorithm
        data: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**data, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def sign(self, subject: str, *, kid: str | None = None, **claims: Any) -> str:
        """A session JWT as Clerk makes it: sub, iss, iat, nbf, exp, azp; `claims` override."""
        now = int(time.time())
        payload = {"sub": subject, "iss": ISSUER, "iat": now, "nbf": now, "exp": now + 60, "azp": ORIGIN, **claims}
        payload = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(payload, self.private, algorithm=self.algorithm, headers={"kid": kid or self.kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A JWT assembled by hand: HMAC-SHA256 with `key`, or no signature when None."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@dataclass
class JwksServer:
    """A JWKS document served over HTTP on a local port; `requests` counts the fetches."""

    keys: list[SigningKey] = field(default_factory=list)
    requests: int = 0
    url: str = ""

    def document(self) -> bytes:
        return json.dumps({"keys": [key.jwk() for key in self.keys]}).encode()


@contextmanager
def jwks_server(*keys: SigningKey) -> Iterator[JwksServer]:
    served = JwksServer(list(keys))

    class Handler(LocalHandler):
        def do_GET(self) -> None:
            served.requests += 1
            self.reply(200, "application/json", served.document())

    with local_http_server(Handler) as base:
        served.url = f"{base}/.well-known/jwks.json"
        yield served


def insert_user(database_url: str, clerk_id: str) -> str:
    user_id = "u" + uuid.uuid4().hex[:24]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, clerk_id, email, create_time, update_time) VALUES (%s, %s, %s, now(), now())",
            (user_id, clerk_id, f"{clerk_id}@example.com"),
        )
    return user_id


def insert_build(database_url: str) -> str:
    """A build (with its user and project), as rows; its id."""
    user_id = insert_user(database_url, f"user_{uuid.uuid4().hex[:12]}")
    project_id, build_id = "p" + uuid.uuid4().hex[:24], "b" + uuid.uuid4().hex[:24]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO projects (id, user_id, name, create_time, update_time) VALUES (%s, %s, 'p', now(), now())",
            (project_id, user_id),
        )
        conn.execute(
            "INSERT INTO builds (id, user_id, project_id, app_spec, create_time, update_time) "
            "VALUES (%s, %s, %s, 'spec', now(), now())",
            (build_id, user_id, project_id),
        )
    return build_id
