"""GitHub and GitLab commit-status APIs: what to send for a Fornax state, and what an answer means.

Pure functions (no I/O): `request_for` builds the HTTP request, `classify` reads the answer as done, retry
(after how long) or give up (why). Woodpecker and Drone drop a status whose post failed; here only an
answer that can never succeed by waiting (a bad token, an unknown repository) ends the attempts.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

# Fornax's states, ranked: a status never moves back (an old `running` never follows `success`).
RANK = {"pending": 0, "running": 1, "success": 2, "failed": 2, "cancelled": 2}
GITHUB = {"pending": "pending", "running": "pending", "success": "success", "failed": "failure",
          "cancelled": "error"}
GITLAB = {"pending": "pending", "running": "running", "success": "success", "failed": "failed",
          "cancelled": "canceled"}
DESCRIPTION_MAX = 140  # GitHub's limit; GitLab takes more, one rule for both


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    json: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    kind: str  # "done" | "retry" | "give_up"
    after: float = 0.0  # seconds, for "retry"
    reason: str = ""


def provider_state(provider: str, state: str) -> str:
    return (GITHUB if provider == "github" else GITLAB)[state]


def describe(state: str, detail: str = "") -> str:
    text = {"pending": "queued", "running": "building", "success": "built and pushed",
            "failed": "failed", "cancelled": "cancelled"}[state]
    if detail:
        text = f"{text}: {detail}"
    return text if len(text) <= DESCRIPTION_MAX else text[: DESCRIPTION_MAX - 1] + "…"


def request_for(provider: str, api_url: str, repository: str, sha: str, state: str, token: str,
                context: str, target_url: str, description: str) -> Request:
    base = api_url.rstrip("/")
    if provider == "github":
        return Request("POST", f"{base}/repos/{repository}/statuses/{sha}",
                       {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                        "X-GitHub-Api-Version": "2022-11-28"},
                       {"state": GITHUB[state], "context": context, "target_url": target_url,
                        "description": description})
    project = quote(repository, safe="")  # a path "group/project" is one URL-encoded segment
    return Request("POST", f"{base}/projects/{project}/statuses/{sha}", {"PRIVATE-TOKEN": token},
                   {"state": GITLAB[state], "name": context, "target_url": target_url,
                    "description": description})


def lookup_for(provider: str, api_url: str, repository: str, sha: str, token: str) -> Request:
    """The request listing a commit's statuses: after a post timed out, it may have been applied."""
    base = api_url.rstrip("/")
    if provider == "github":
        return Request("GET", f"{base}/repos/{repository}/commits/{sha}/statuses",
                       {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}, {})
    project = quote(repository, safe="")
    return Request("GET", f"{base}/projects/{project}/repository/commits/{sha}/statuses",
                   {"PRIVATE-TOKEN": token}, {})


def current_state(provider: str, listing: Any, context: str) -> str | None:
    """The newest state a listing shows for our context (GitHub lists newest first; GitLab by id)."""
    if not isinstance(listing, list):
        return None
    if provider == "github":
        mine = [s for s in listing if isinstance(s, dict) and s.get("context") == context]
        return str(mine[0].get("state")) if mine else None
    mine = [s for s in listing if isinstance(s, dict) and s.get("name") == context]
    mine.sort(key=lambda s: s.get("id") or 0)
    return str(mine[-1].get("status")) if mine else None


def backoff(attempt: int, cap: float) -> float:
    """1, 2, 4, … seconds, capped."""
    return float(min(cap, 2 ** max(0, attempt - 1)))


def _retry_after(headers: Any, now: float) -> float | None:
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)
            return max(0.0, parsed.timestamp() - now) if parsed else None
    if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
        try:
            return max(0.0, float(headers["x-ratelimit-reset"]) - now)
        except ValueError:
            return None
    return None


def classify(provider: str, status: int, headers: Any, body: str, attempt: int, cap: float,
             now: float | None = None) -> Outcome:
    """What an answer means. `headers` is case-insensitive (httpx.Headers)."""
    now = time.time() if now is None else now
    if 200 <= status < 300:
        return Outcome("done")
    wait = _retry_after(headers, now)
    lowered = body.lower()
    if status == 429 or (status == 403 and (wait is not None or "rate limit" in lowered)):
        # GitHub's primary and secondary rate limits: wait as told, else a minute at least.
        return Outcome("retry", wait if wait is not None else max(60.0, backoff(attempt, cap)), "rate limited")
    if provider == "gitlab" and status == 400 and "cannot transition status" in lowered:
        return Outcome("done", reason="already in that state")  # GitLab refuses a same-state transition
    if status >= 500 or status in (408, 409):
        return Outcome("retry", wait if wait is not None else backoff(attempt, cap), f"HTTP {status}")
    return Outcome("give_up", reason=f"HTTP {status}: {body.strip()[:200]}")
