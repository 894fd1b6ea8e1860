"""API tokens: created once, stored only as a hash, looked up by hash (gateway, logstream, CLI)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from pymongo.errors import DuplicateKeyError

from .store import ReadModelStore


class UserExists(ValueError):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "fx_" + secrets.token_urlsafe(32)


def create_user(store: ReadModelStore, name: str) -> str:
    """Create user `name` and return its token (shown once; only the hash is stored)."""
    token = new_token()
    try:
        store.users.insert_one({"_id": name, "token_hash": hash_token(token), "created_at": datetime.now(UTC)})
    except DuplicateKeyError as exc:
        raise UserExists(f"user {name!r} already exists") from exc
    return token


def rotate_token(store: ReadModelStore, name: str) -> str | None:
    """Give user `name` a new token (the old one stops working at once); None when there is no such user."""
    token = new_token()
    changes = {"token_hash": hash_token(token), "rotated_at": datetime.now(UTC)}
    result = store.users.update_one({"_id": name}, {"$set": changes})
    return token if result.matched_count else None


def revoke_token(store: ReadModelStore, name: str) -> bool:
    """Revoke user `name`'s token: no request authenticates as it until `fornax user token NAME` issues one."""
    # token_hash is unique-indexed: a revoked user keeps a value no token hashes to, not a shared null.
    result = store.users.update_one(
        {"_id": name}, {"$set": {"token_hash": f"revoked:{secrets.token_hex(16)}", "revoked_at": datetime.now(UTC)}}
    )
    return bool(result.matched_count)


def user_for_token(store: ReadModelStore, token: str | None) -> str | None:
    """The user id owning `token`, or None."""
    if not token:
        return None
    doc = store.users.find_one({"token_hash": hash_token(token)}, {"_id": 1})
    return str(doc["_id"]) if doc else None


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (or a bare token)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if value and scheme.lower() in ("bearer", "token"):
        return value.strip()
    return None if value else scheme
