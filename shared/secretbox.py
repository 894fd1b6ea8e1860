"""Secrets at rest: repository passwords, provider tokens, webhook secrets and build secrets are stored
Fernet-encrypted (AES-128-CBC + HMAC-SHA256) in the `secrets` collection, under the key(s) in
`secrets_key`. A sealed value carries the prefix `fernet:`; a value without it is an older plaintext
one: it is read as it is, and `seal_stored` (run by each gateway as it starts) seals it in place.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .settings import Settings
from .store import ReadModelStore

PREFIX = "fernet:"
SEALED_FIELDS = ("webhook_secret", "repo_password", "repo_token")


class SecretsKeyError(RuntimeError):
    """A sealed value cannot be opened: no key configured, or not the key it was sealed with."""


@lru_cache(maxsize=8)
def _box(keys: str | None) -> SecretBox:
    return SecretBox(keys)


def new_key() -> str:
    """A fresh key for FORNAX_SECRETS_KEY."""
    return Fernet.generate_key().decode()


class SecretBox:
    """Seals and opens secret strings with the configured keys (the first one seals; any one opens, so a
    key can be rotated by putting the new one first). Without a key, values stay plaintext."""

    def __init__(self, keys: str | None) -> None:
        parts = [k.strip() for k in (keys or "").split(",") if k.strip()]
        try:
            self._fernet = MultiFernet([Fernet(k) for k in parts]) if parts else None
        except ValueError:
            raise ValueError("secrets_key: each key must be 32 url-safe base64-encoded bytes (Fernet)") from None

    @classmethod
    def of(cls, settings: Settings) -> SecretBox:
        """The box for `settings`' keys (one per distinct key setting)."""
        key = settings.secrets_key
        return _box(key.get_secret_value() if key is not None else None)

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def seal(self, value: str | None) -> str | None:
        if value is None or self._fernet is None or value.startswith(PREFIX):
            return value
        return PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: Any) -> Any:
        if not isinstance(value, str) or not value.startswith(PREFIX):
            return value
        if self._fernet is None:
            raise SecretsKeyError("a stored secret is encrypted but no secrets_key is configured")
        try:
            return self._fernet.decrypt(value[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretsKeyError("a stored secret does not open with the configured secrets_key") from None

    def seal_doc(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A secrets document (or a `$set` of some of its fields) with every secret value sealed."""
        out = dict(doc)
        for name in SEALED_FIELDS:
            if name in out:
                out[name] = self.seal(out[name])
        if isinstance(out.get("values"), dict):
            out["values"] = {k: self.seal(v) for k, v in out["values"].items()}
        return out

    def open_doc(self, doc: dict[str, Any] | None) -> dict[str, Any] | None:
        """The same document with every sealed value opened (plaintext ones as they are)."""
        if doc is None:
            return None
        out = dict(doc)
        for name in SEALED_FIELDS:
            if name in out:
                out[name] = self.open(out[name])
        if isinstance(out.get("values"), dict):
            out["values"] = {k: self.open(v) for k, v in out["values"].items()}
        return out


def seal_stored(store: ReadModelStore, box: SecretBox) -> int:
    """Seal the plaintext values of older secrets documents in place; the number of documents changed.
    Each write is conditional on the value read, so a concurrent update (or another gateway doing the
    same) is never overwritten."""
    if not box.enabled:
        return 0
    changed = 0
    for doc in store.secrets.find({}):
        updates: dict[str, Any] = {}
        for name in SEALED_FIELDS:
            value = doc.get(name)
            if isinstance(value, str) and value and not value.startswith(PREFIX):
                updates[name] = (value, box.seal(value))
        for key, value in (doc.get("values") or {}).items():
            # (a name with '.' cannot be a field path: that value stays as it is, still readable)
            if isinstance(value, str) and value and not value.startswith(PREFIX) and "." not in key:
                updates[f"values.{key}"] = (value, box.seal(value))
        if updates:
            condition = {"_id": doc["_id"], **{name: old for name, (old, _) in updates.items()}}
            result = store.secrets.update_one(condition, {"$set": {name: new for name, (_, new) in updates.items()}})
            changed += result.modified_count
    return changed
