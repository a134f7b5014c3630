"""API keys: shown once, stored as an HMAC-SHA256 under the deployment secret."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "gt-"


def hash_key(plaintext: str, secret: str) -> str:
    return hmac.new(secret.encode(), plaintext.encode(), hashlib.sha256).hexdigest()


def generate_key(secret: str) -> tuple[str, str, str]:
    """A new key as ``(plaintext, display prefix, hash)``; only the hash is stored."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    return plaintext, plaintext[:10], hash_key(plaintext, secret)
