"""Who may call the admin endpoints (deploy a version, set weights, promote, roll back).

A request needs ``Authorization: Bearer <token>`` matching the token in the replica's
environment variable (``ServeOptions.admin_token_env``, default ``DSPEX_SERVE_ADMIN_TOKEN``),
or, when that variable is unset, whose SHA-256 matches ``ServeOptions.admin_token_sha256``.
With neither configured the admin endpoints are off. Tokens are compared in constant time
and never appear in a reply, a log line or an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import os

__all__ = ["admin_denial", "token_sha256"]


def token_sha256(token: str) -> str:
    """The digest to put in ``ServeOptions.admin_token_sha256``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def admin_denial(authorization: str | None, *, env_var: str, token_sha256_hex: str | None) -> str | None:
    """None when ``authorization`` (the header's value) carries the admin token; otherwise the
    reason to refuse (a 401 message without any token in it)."""
    expected = os.environ.get(env_var) or None
    if expected is None and not token_sha256_hex:
        return f"The admin endpoints are disabled: set {env_var} in the Serve replicas' environment."
    scheme, _, presented = (authorization or "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return "The admin endpoints need an 'Authorization: Bearer <token>' header."
    if expected is not None:
        ok = hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))
    else:
        assert token_sha256_hex is not None
        ok = hmac.compare_digest(token_sha256(presented), token_sha256_hex.lower())
    return None if ok else "The admin token is not valid."
