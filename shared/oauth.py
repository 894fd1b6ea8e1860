"""OAuth for private repositories (GitHub, GitLab): authorization states, encrypted tokens, the
providers' differences. Used by the gateway (the flow, listing repositories) and the builder (a
service whose `repository.oauth` names a provider clones and tags with its owner's token).

Collections: `oauth_states` {_id: sha256(state), user_id, provider, expires_at} — random, bound to
the user who asked, single use (taken with find_one_and_delete); `oauth_tokens` {_id: "<user>:<provider>",
user_id, provider, token (sealed by shared.secretbox under settings.secrets_key), created_at}. Without
a secrets_key nothing is stored (TokensUnavailable).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .secretbox import SecretBox, SecretsKeyError
from .store import ReadModelStore

PROVIDERS = ("github", "gitlab")


@dataclass(frozen=True)
class Style:
    default_scope: str
    clone_username: str  # the user name git sends with the token as password
    repos_path: str  # the API path listing the user's repositories (private ones too)


STYLES = {
    "github": Style("repo", "x-access-token", "/user/repos?per_page=100&affiliation=owner,collaborator"),
    "gitlab": Style("api", "oauth2", "/projects?membership=true&per_page=100&simple=true"),
}


class TokensUnavailable(RuntimeError):
    """No secrets_key is configured (tokens are never stored in plaintext), or it does not open them."""


def _box(settings: Any) -> SecretBox:
    box = SecretBox.of(settings)
    if not box.enabled:
        raise TokensUnavailable("OAuth tokens are stored only encrypted: settings secrets_key is not set")
    return box


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def new_state(store: ReadModelStore, user_id: str, provider: str, ttl: float) -> str:
    state = secrets.token_urlsafe(32)
    store["oauth_states"].insert_one(
        {"_id": _hash(state), "user_id": user_id, "provider": provider, "expires_at": time.time() + ttl})
    return state


def take_state(store: ReadModelStore, state: str, provider: str) -> str | None:
    """The user the state was issued to, once (it is deleted); None if unknown, used or expired."""
    doc = store["oauth_states"].find_one_and_delete({"_id": _hash(state)})
    if doc is None or doc.get("provider") != provider or float(doc.get("expires_at", 0)) < time.time():
        return None
    return str(doc["user_id"])


def save_token(store: ReadModelStore, settings: Any, user_id: str, provider: str, token: str) -> None:
    store["oauth_tokens"].replace_one(
        {"_id": f"{user_id}:{provider}"},
        {"_id": f"{user_id}:{provider}", "user_id": user_id, "provider": provider,
         "token": _box(settings).seal(token), "created_at": datetime.now(UTC)},
        upsert=True)


def load_token(store: ReadModelStore, settings: Any, user_id: str, provider: str) -> str | None:
    doc = store["oauth_tokens"].find_one({"_id": f"{user_id}:{provider}"})
    if doc is None:
        return None
    try:
        return str(_box(settings).open(doc["token"]))
    except SecretsKeyError as exc:
        raise TokensUnavailable(str(exc)) from None


def delete_token(store: ReadModelStore, user_id: str, provider: str) -> bool:
    return store["oauth_tokens"].delete_one({"_id": f"{user_id}:{provider}"}).deleted_count > 0


def repo_entry(provider: str, item: dict[str, Any]) -> dict[str, Any]:
    """One repository of a provider's list, in one shape."""
    if provider == "github":
        return {"name": item.get("name"), "full_name": item.get("full_name"), "clone_url": item.get("clone_url"),
                "private": bool(item.get("private")), "default_branch": item.get("default_branch")}
    return {"name": item.get("name"), "full_name": item.get("path_with_namespace"),
            "clone_url": item.get("http_url_to_repo"), "private": item.get("visibility") != "public",
            "default_branch": item.get("default_branch")}
