"""Signed auth tokens: JWTs (HS256) that carry an identity, an expiry and topic patterns.

Theory of operation
-------------------
A static token file (``--auth tokens.json``) suits simple setups, but operators expect
tokens that expire and that an issuer can mint without touching the server: a JSON Web
Token signed with a secret the server knows (``--token-secret``). Verification is PyJWT's
(no cryptography of our own); what this module adds is the claim set and its meaning:

- ``sub`` (required): the identity's name, used in logs and for per-identity limits;
- ``exp`` (required): expiry, seconds since the epoch. A HELLO with an expired token is
  refused UNAUTHENTICATED; a connection whose token expires while it is open is closed with
  ERROR(TOKEN_EXPIRED) at that moment (SPEC.md §5.3);
- ``subscribe`` / ``publish`` (optional lists of topic patterns, as in the token file);
- ``nbf``, ``iat`` are honoured when present; ``aud`` must be ``"pushwire"`` when present.

Only HS256 is accepted: the algorithm is fixed by the server, never read from the token
(the classic ``alg: none`` and algorithm-confusion attacks have nothing to work with).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from pushwire.server.auth import Permissions

__all__ = ["ALGORITHM", "AUDIENCE", "SignedToken", "mint", "verify"]

ALGORITHM = "HS256"
AUDIENCE = "pushwire"
#: Clock skew tolerated between the issuer and the server, in seconds.
LEEWAY = 5.0
#: RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class SignedToken:
    name: str
    permissions: Permissions
    expires_at: float  # seconds since the epoch (wall clock)


def _key(secret: bytes) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def verify(token: bytes, secret: bytes, *, now: float | None = None) -> SignedToken | None:
    """The identity of a valid, unexpired token signed with ``secret``; None otherwise
    (malformed, wrong signature or algorithm, expired, missing claims, bad patterns)."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            _key(secret),
            algorithms=[ALGORITHM],
            leeway=LEEWAY,
            options={"require": ["exp", "sub"], "verify_aud": False},
        )
        if "aud" in claims and claims["aud"] != AUDIENCE:
            return None
        if now is not None and claims["exp"] + LEEWAY <= now:
            return None
        name = claims["sub"]
        if not isinstance(name, str) or not name:
            return None
        permissions = Permissions.from_json(
            {k: claims[k] for k in ("subscribe", "publish") if k in claims}
        )
        return SignedToken(name, permissions, float(claims["exp"]))
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None


def mint(
    secret: bytes,
    name: str,
    *,
    subscribe: tuple[str, ...] = (),
    publish: tuple[str, ...] = (),
    ttl: float = 3600.0,
    now: float | None = None,
) -> str:
    """A token for ``name`` valid for ``ttl`` seconds (for development and tests; a real
    deployment mints with its own issuer and the same claims)."""
    if not name:
        raise ValueError("a token needs a name (the 'sub' claim)")
    if not 0 < ttl < 10 * 365 * 86400:
        raise ValueError("ttl must be above 0 and below ten years")
    issued = time.time() if now is None else now
    claims = {
        "sub": name,
        "aud": AUDIENCE,
        "iat": int(issued),
        "exp": int(issued + ttl),
        "subscribe": list(subscribe),
        "publish": list(publish),
    }
    return jwt.encode(claims, _key(secret), algorithm=ALGORITHM)
