"""Helpers shared by the gateway's integration and e2e tests (HTTP client, polling, webhook signing)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(
    resp: httpx.Response, status: int, code: str | None = None, field: str | None = None
) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.text)
    err = resp.json()["error"]
    assert isinstance(err["code"], str) and isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code, err
    if field is not None:
        assert err.get("field") == field, err
    return err


def recorded(name: str) -> tuple[dict[str, str], dict[str, Any]]:
    return json.loads((FIXTURES / f"{name}.headers.json").read_text()), json.loads(
        (FIXTURES / f"{name}.json").read_text()
    )


def github_push(
    repo_url: str,
    secret: str,
    *,
    ref: str = "refs/heads/main",
    after: str | None = None,
    delivery: str | None = None,
    sign_with: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """A recorded GitHub push re-pointed at `repo_url`, signed with `secret`."""
    headers, data = recorded("github_push")
    data["ref"] = ref
    data["after"] = after or uuid.uuid4().hex + uuid.uuid4().hex[:8]
    data["head_commit"]["id"] = data["after"]
    data["repository"]["clone_url"] = repo_url
    for key in ("html_url", "url", "svn_url"):
        data["repository"][key] = "https://example.invalid/not-this/" + uuid.uuid4().hex
    data["repository"]["ssh_url"] = "git@example.invalid:x/" + uuid.uuid4().hex
    data["repository"]["git_url"] = "git://example.invalid/" + uuid.uuid4().hex
    body = json.dumps(data).encode()
    sig = "sha256=" + hmac.new((sign_with or secret).encode(), body, hashlib.sha256).hexdigest()
    headers = {**headers, "X-Hub-Signature-256": sig, "X-GitHub-Delivery": delivery or str(uuid.uuid4())}
    return headers, body


def gitlab_push(
    repo_url: str, token: str, *, ref: str = "refs/heads/master", delivery: str | None = None
) -> tuple[dict[str, str], bytes]:
    headers, data = recorded("gitlab_push")
    data["ref"] = ref
    data["project"] = {
        "name": "x",
        "git_http_url": repo_url,
        "web_url": "https://example.invalid/" + uuid.uuid4().hex,
    }
    data["repository"] = {"name": "x", "git_http_url": repo_url}
    body = json.dumps(data).encode()
    headers = {**headers, "X-Gitlab-Token": token, "X-Gitlab-Event-UUID": delivery or str(uuid.uuid4())}
    return headers, body


def consume_until(
    bootstrap: str, topic: str, match: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Read `topic` from the beginning until `count` events match (or the deadline passes)."""

    async def run() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        found: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and len(found) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for rec in records:
                        event = json.loads(rec.value)
                        if match(event):
                            found.append(event)
        finally:
            await consumer.stop()
        return found

    return asyncio.run(run())
