"""Encryption at rest for credentials the server keeps (OAuth tokens): Fernet (AES-128-CBC + HMAC)
with a key from settings. No key configured → nothing is stored (CryptoUnavailable)."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet, InvalidToken


class CryptoUnavailable(RuntimeError):
    """No key is configured, or the stored value was encrypted with another key."""


def _fernet(settings: Any) -> Fernet:
    key = getattr(settings, "oauth_token_key", None)
    if key is None or not key.get_secret_value():
        raise CryptoUnavailable("no encryption key configured (settings oauth_token_key)")
    try:
        return Fernet(key.get_secret_value().encode())
    except ValueError as exc:
        raise CryptoUnavailable(f"settings oauth_token_key is not a Fernet key: {exc}") from None


def encrypt(settings: Any, plain: str) -> str:
    return _fernet(settings).encrypt(plain.encode()).decode()


def decrypt(settings: Any, token: str) -> str:
    try:
        return _fernet(settings).decrypt(token.encode()).decode()
    except InvalidToken:
        raise CryptoUnavailable("a stored credential cannot be decrypted with the configured key") from None
