"""Posting due commit states to GitHub / GitLab, with retries that honour the providers' limits."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from shared import oauth
from shared.secrets_read import service_secret
from shared.store import ReadModelStore

from . import outbox
from .providers import (
    Outcome,
    Request,
    classify,
    current_state,
    describe,
    lookup_for,
    provider_state,
    request_for,
)

log = logging.getLogger(__name__)


class Delivery:
    """One delivery loop: `step()` posts what is due now; `run()` repeats it."""

    def __init__(self, store: ReadModelStore, public_url: str, *, timeout: float = 10.0, max_backoff: float = 300.0,
                 every: float = 0.25, batch: int = 20, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.store = store
        self.public_url = public_url.rstrip("/")
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.every = every
        self.batch = batch
        self.http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def run(self) -> None:
        while True:
            try:
                busy = await self.step()
            except Exception:  # Mongo blinked: the outbox is still there next round
                log.exception("commit-status delivery round failed")
                busy = 0
            if not busy:
                await asyncio.sleep(self.every)

    async def step(self) -> int:
        docs = await asyncio.to_thread(outbox.claim_due, self.store, time.time(), self.batch)
        await asyncio.gather(*(self.post(doc) for doc in docs))
        return len(docs)

    async def post(self, doc: dict[str, Any]) -> None:
        ready = await asyncio.to_thread(self._target, doc)
        if isinstance(ready, Outcome):  # nothing to post (no config) or a reason to wait
            if ready.kind == "retry":
                await asyncio.to_thread(outbox.retry, self.store, doc, ready.after, ready.reason)
            else:
                await asyncio.to_thread(outbox.delivered, self.store, doc, doc.get("delivered"), ready.reason or None)
            return
        config, token, context = ready
        state = doc["state"]
        pstate = provider_state(config["provider"], state)
        if doc.get("delivered") == pstate:  # e.g. GitHub has no "running": pending was posted already
            await asyncio.to_thread(outbox.delivered, self.store, doc, pstate)
            return
        if doc.get("uncertain") and await self._shows(config, token, context, doc["commit"], pstate):
            await asyncio.to_thread(outbox.delivered, self.store, doc, pstate)  # the timed-out post was applied
            return
        req = _bearer(config, request_for(config["provider"], config["api_url"], config["repository"],
                                          doc["commit"], state, token, context,
                                          f"{self.public_url}/ui/versions/{doc['_id']}",
                                          describe(state, doc.get("detail") or "")))
        attempt = int(doc.get("attempts") or 0) + 1
        try:
            resp = await self.http.request(req.method, req.url, headers=req.headers, json=req.json)
            outcome = classify(config["provider"], resp.status_code, resp.headers, resp.text, attempt,
                               self.max_backoff)
        except httpx.HTTPError as exc:
            # A timeout is ambiguous (the provider may have applied it): look before posting again.
            outcome = Outcome("retry", min(self.max_backoff, 2.0 ** min(attempt, 10)), type(exc).__name__)
            if isinstance(exc, httpx.TimeoutException):
                await asyncio.to_thread(outbox.mark_uncertain, self.store, doc)
        if outcome.kind == "done":
            await asyncio.to_thread(outbox.delivered, self.store, doc, pstate)
        elif outcome.kind == "retry":
            log.info("commit status %s for %s: %s; again in %.1fs", state, doc["_id"], outcome.reason, outcome.after)
            await asyncio.to_thread(outbox.retry, self.store, doc, outcome.after, outcome.reason)
        else:
            log.warning("commit status %s for %s given up: %s", state, doc["_id"], outcome.reason)
            await asyncio.to_thread(outbox.delivered, self.store, doc, doc.get("delivered"), outcome.reason)

    async def _shows(self, config: dict[str, Any], token: str, context: str, sha: str, pstate: str) -> bool:
        req = _bearer(config, lookup_for(config["provider"], config["api_url"], config["repository"], sha, token))
        try:
            resp = await self.http.request(req.method, req.url, headers=req.headers)
            return resp.status_code == 200 and current_state(config["provider"], resp.json(), context) == pstate
        except (httpx.HTTPError, ValueError):
            return False  # cannot tell: post again (a duplicate beats a lost status)

    def _target(self, doc: dict[str, Any]) -> tuple[dict[str, Any], str, str] | Outcome:
        """(config, token, context) for the version's service, or why there is nothing to post now."""
        if not doc.get("service_id"):
            return Outcome("retry", 1.0, "version not requested yet")
        service = self.store.services.find_one({"_id": doc["service_id"]},
                                               {"name": 1, "commit_status": 1, "user_id": 1, "repository": 1})
        if service is None:
            return Outcome("retry", 1.0, "service not projected yet")
        config = service.get("commit_status")
        if not config:
            return Outcome("give_up", reason="")  # this service reports no commit status
        if not doc.get("commit"):
            if doc.get("rank") == 2:
                return Outcome("give_up", reason="the version ended before its commit was known")
            return Outcome("retry", 1.0, "commit not known yet")  # an API build learns it when cloned
        if not config.get("token_secret"):  # the owner's OAuth token (repository.oauth, same provider)
            token = self._oauth_token(service, config["provider"])
            if not token:
                return Outcome("give_up", reason=f"the owner is not connected to {config['provider']} (OAuth)")
            return {**config, "oauth": True}, token, f"fornax/{service.get('name')}"
        token = service_secret(self.store, doc["service_id"], config["token_secret"])
        if not token:
            return Outcome("give_up", reason=f"secret {config['token_secret']!r} is not set")
        return config, token, f"fornax/{service.get('name')}"

    def _oauth_token(self, service: dict[str, Any], provider: str) -> str | None:
        if (service.get("repository") or {}).get("oauth") != provider or not service.get("user_id"):
            return None
        try:
            return oauth.load_token(self.store, self.store.settings, str(service["user_id"]), provider)
        except oauth.TokensUnavailable:
            return None

    async def close(self) -> None:
        await self.http.aclose()


def _bearer(config: dict[str, Any], req: Request) -> Request:
    """An OAuth token goes as `Authorization: Bearer` (GitLab takes PRIVATE-TOKEN for access tokens only)."""
    if config.get("oauth") and "PRIVATE-TOKEN" in req.headers:
        headers = {k: v for k, v in req.headers.items() if k != "PRIVATE-TOKEN"}
        return Request(req.method, req.url, {**headers, "Authorization": f"Bearer {req.headers['PRIVATE-TOKEN']}"},
                       req.json)
    return req
