"""Pure webhook parsing (no I/O): GitHub and GitLab bodies + headers -> Push, Ignored or WebhookError.

Whatever bytes arrive, the parsers return a Push or an Ignored, or raise WebhookError; never another
exception (a hypothesis property checks this).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from pydantic_core import from_json  # ~2x faster than json.loads on the webhook hot path

ZERO_SHA = "0" * 40
_MAX_TEXT = 4000
_URL_KEYS = (
    "clone_url",
    "html_url",
    "ssh_url",
    "git_url",
    "svn_url",
    "url",
    "git_http_url",
    "git_ssh_url",
    "http_url",
    "web_url",
    "homepage",
)


class WebhookError(ValueError):
    """A malformed webhook (answered 400)."""


@dataclass(frozen=True)
class Push:
    provider: str
    repo_urls: tuple[str, ...]
    ref: str
    branch: str | None
    tag: str | None
    deleted: bool
    after: str
    before: str
    pusher: str | None
    message: str | None
    delivery_id: str


@dataclass(frozen=True)
class Ignored:
    reason: str


Result = Push | Ignored


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _text(value: Any, limit: int = _MAX_TEXT) -> str | None:
    """A string field made safe to store and encode (no lone surrogates), or None."""
    if not isinstance(value, str):
        return None
    if value.isascii():  # (constant time: no surrogates possible)
        return value[:limit]
    return value.encode("utf-8", "replace").decode("utf-8")[:limit]


def _sha(value: Any) -> str:
    text = _text(value, 64)
    return text or ""


def delivery_id(provider: str, headers: Mapping[str, str], body: bytes) -> str:
    """The provider's delivery id header, else a hash of the body (the same body twice = one delivery)."""
    return _delivery_id(provider, _headers(headers), body)


def _delivery_id(provider: str, h: dict[str, str], body: bytes) -> str:
    raw = h.get("x-github-delivery") if provider == "github" else h.get("x-gitlab-event-uuid")
    raw = (raw or "").strip()
    if raw:
        return _text(raw, 200) or ""
    return "sha256-" + hashlib.sha256(body).hexdigest()[:40]


def _load(body: bytes, content_type: str = "") -> dict[str, Any]:
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = parse_qs(body.decode("utf-8"), strict_parsing=False)
            if "payload" not in form:
                raise WebhookError("form-encoded webhook without a 'payload' field")
            data = from_json(form["payload"][0])
        else:
            data = from_json(body)
    except WebhookError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise WebhookError(f"body is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise WebhookError("body must be a JSON object")
    return data


def _ref_parts(ref: Any) -> tuple[str, str | None, str | None]:
    text = _text(ref, 1000)
    if not text:
        raise WebhookError("push without a 'ref'")
    if text.startswith("refs/heads/"):
        return text, text.removeprefix("refs/heads/"), None
    if text.startswith("refs/tags/"):
        return text, None, text.removeprefix("refs/tags/")
    return text, None, None


def _urls(*sources: Any) -> tuple[str, ...]:
    urls: list[str] = []
    for source in sources:
        if not isinstance(source, dict):
            continue
        for key in _URL_KEYS:
            url = _text(source.get(key), 2000)
            if url and url.strip() and url not in urls:
                urls.append(url.strip())
    return tuple(urls)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _last_commit_message(commits: Any) -> str | None:
    if isinstance(commits, list) and commits and isinstance(commits[-1], dict):
        return _text(commits[-1].get("message"))
    return None


def parse_github(headers: Mapping[str, str], body: bytes) -> Result:
    """Parse a GitHub webhook: `push` -> Push, `ping` and other events -> Ignored."""
    return _parse_github(_headers(headers), body)


def _parse_github(h: dict[str, str], body: bytes) -> Result:
    event = h.get("x-github-event", "").strip()
    if not event:
        raise WebhookError("missing X-GitHub-Event header")
    if event == "ping":
        return Ignored("ping")
    if event != "push":
        return Ignored(f"event {event[:100]!r} is not a push")
    data = _load(body, h.get("content-type", ""))
    ref, branch, tag = _ref_parts(data.get("ref"))
    if branch is None and tag is None:
        return Ignored(f"ref {ref[:200]!r} is neither a branch nor a tag")
    urls = _urls(data.get("repository"))
    if not urls:
        raise WebhookError("push without repository URLs")
    after = _sha(data.get("after"))
    deleted = data.get("deleted") is True or after == ZERO_SHA
    head = _dict(data.get("head_commit"))
    pusher = _text(_dict(data.get("pusher")).get("name"), 200) or _text(
        _dict(data.get("sender")).get("login"), 200
    )
    return Push(
        provider="github",
        repo_urls=urls,
        ref=ref,
        branch=branch,
        tag=tag,
        deleted=deleted,
        after=after,
        before=_sha(data.get("before")),
        pusher=pusher,
        message=_text(head.get("message")) or _last_commit_message(data.get("commits")),
        delivery_id=_delivery_id("github", h, body),
    )


_GITLAB_EVENTS = {"push hook": "push", "tag push hook": "tag_push"}


def parse_gitlab(headers: Mapping[str, str], body: bytes) -> Result:
    """Parse a GitLab webhook: `Push Hook` / `Tag Push Hook` -> Push, other events -> Ignored."""
    return _parse_gitlab(_headers(headers), body)


def _parse_gitlab(h: dict[str, str], body: bytes) -> Result:
    event = h.get("x-gitlab-event", "").strip()
    if not event:
        raise WebhookError("missing X-Gitlab-Event header")
    kind = _GITLAB_EVENTS.get(event.lower())
    if kind is None:
        return Ignored(f"event {event[:100]!r} is not a push")
    data = _load(body, h.get("content-type", ""))
    object_kind = data.get("object_kind")
    if object_kind is not None and object_kind != kind:
        raise WebhookError(f"object_kind {str(object_kind)[:50]!r} does not match the {event[:50]!r} header")
    ref, branch, tag = _ref_parts(data.get("ref"))
    if branch is None and tag is None:
        return Ignored(f"ref {ref[:200]!r} is neither a branch nor a tag")
    urls = _urls(data.get("project"), data.get("repository"))
    if not urls:
        raise WebhookError("push without project/repository URLs")
    after = _sha(data.get("after"))
    message = _last_commit_message(data.get("commits")) or _text(data.get("message"))
    pusher = _text(data.get("user_username"), 200) or _text(data.get("user_name"), 200)
    return Push(
        provider="gitlab",
        repo_urls=urls,
        ref=ref,
        branch=branch,
        tag=tag,
        deleted=after == ZERO_SHA,
        after=after,
        before=_sha(data.get("before")),
        pusher=pusher,
        message=message,
        delivery_id=_delivery_id("gitlab", h, body),
    )


# The parsers by provider, for headers that are already a dict with lower-case names (what an ASGI server gives).
PARSERS_LOWER = {"github": _parse_github, "gitlab": _parse_gitlab}


_SCP = re.compile(r"^(?P<user>[^@/:]+@)?(?P<host>[^/:]+):(?P<path>(?!//).*)$")


def normalize_url(url: str) -> str:
    """A comparison key for repository URLs: no trailing '/' or '.git', lower-case scheme and host."""
    text = url
    while True:  # until nothing changes, so the key of a key is the key itself
        before = text
        text = text.strip().rstrip("/")
        if text.lower().endswith(".git"):
            text = text[:-4]
        if text == before:
            break
    scheme, sep, rest = text.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        return f"{scheme.lower()}://{authority.lower()}{slash}{path}"
    scp = _SCP.match(text)
    if scp:
        return f"{scp.group('user') or ''}{scp.group('host').lower()}:{scp.group('path')}"
    return text


def github_signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """X-Hub-Signature-256 == 'sha256=' + HMAC-SHA256(secret, raw body), compared in constant time."""
    if not header or not secret:
        return False
    expected = "sha256=" + hmac.digest(secret.encode(), body, "sha256").hex()  # (one-shot: no HMAC object)
    return hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", "replace"))


def gitlab_token_ok(secret: str, header: str | None) -> bool:
    """X-Gitlab-Token equals the secret (constant-time)."""
    if not header or not secret:
        return False
    return hmac.compare_digest(secret.encode(), header.encode("utf-8", "replace"))
