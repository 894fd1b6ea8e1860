"""POST /webhooks/github and /webhooks/gitlab: verify, then one PushReceived per matching service.

The hot path of the gateway (every push of every repository): the two endpoints are plain ASGI
callables rather than `Request -> Response` functions. They read the headers once into a dict, the
body straight from `receive`, and answer with pre-encoded JSON; errors are still raised as ApiError
and answered by the app's exception handlers in the one error shape.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from shared.events import PushReceived
from shared.events.preencode import EncodedEvent, PreEncoder
from shared.events.webhooks import PushReceivedPayload

from ..errors import ApiError
from ..io import publish_on
from ..repo_index import HookTarget, RepoIndex
from ..webhooks import PARSERS_LOWER, Ignored, Push, WebhookError, github_signature_ok, gitlab_token_ok

_JSON_HEADERS = ((b"content-type", b"application/json"),)


def _event(push: Push, target: HookTarget) -> PushReceived:
    """The PushReceived of `push` for one service (the model; `_encoded` is what the hot path sends)."""
    return PushReceived.make(
        target.service_id,
        PushReceivedPayload(
            provider=push.provider,  # type: ignore[arg-type]
            delivery_id=push.delivery_id,
            service_id=target.service_id,
            user_id=target.user_id,
            repo_url=target.repo_url,
            ref=push.ref,
            branch=push.branch,
            tag=push.tag,
            deleted=push.deleted,
            after=push.after,
            before=push.before,
            pusher=push.pusher,
            message=push.message,
        ),
        actor=target.user_id,
    )


_PUSH = PreEncoder(PushReceived)  # the hot path's encoder, generated from the model at start-up


def _encoded(push: Push, target: HookTarget) -> EncodedEvent:
    """Exactly the bytes of `_event(push, target).encode()` (a unit test holds them equal, field by
    field and in order), written in one call instead of building and validating two pydantic models:
    the values are already checked strings, booleans and None, coming from the parser and the repo index."""
    return _PUSH.encode(
        target.service_id,
        {
            "provider": push.provider,
            "delivery_id": push.delivery_id,
            "service_id": target.service_id,
            "user_id": target.user_id,
            "repo_url": target.repo_url,
            "ref": push.ref,
            "branch": push.branch,
            "tag": push.tag,
            "deleted": push.deleted,
            "after": push.after,
            "before": push.before,
            "pusher": push.pusher,
            "message": push.message,
        },
        actor=target.user_id,
    )


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body exceeds the limit of {limit} bytes")


async def _read_body(headers: dict[str, str], receive: Receive, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes (Content-Length first, then while reading)."""
    declared = headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "bad_request", "invalid Content-Length header") from None
        if size > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ApiError(400, "bad_request", "client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Receiver:
    """The ASGI endpoint of one provider."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.parse = PARSERS_LOWER[provider]
        self.__name__ = provider  # (Route takes its name from the endpoint)

    def verifier(self, headers: dict[str, str], body: bytes) -> Any:
        if self.provider == "github":
            header = headers.get("x-hub-signature-256")
            return lambda t: t.secret is not None and github_signature_ok(t.secret, body, header)
        token = headers.get("x-gitlab-token")
        return lambda t: t.secret is not None and gitlab_token_ok(t.secret, token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await _read_body(headers, receive, int(state.settings.max_body_bytes))
        try:
            result = self.parse(headers, body)
        except WebhookError as exc:
            raise ApiError(400, "invalid_webhook", str(exc)) from None
        if isinstance(result, Ignored):
            return await _answer(send, 200, to_json({"ignored": result.reason}))
        index: RepoIndex = state.repo_index
        targets = await index.lookup(result.repo_urls)
        if not targets:
            raise ApiError(404, "repository_not_found", "no service is registered for this repository")
        verify = self.verifier(headers, body)
        verified = [t for t in targets if verify(t)]
        if not verified:  # the secret may have been rotated since the snapshot was taken
            verified = [t for t in await index.fresh_secrets(targets) if verify(t)]
        if not verified:
            what = "X-Hub-Signature-256" if self.provider == "github" else "X-Gitlab-Token"
            raise ApiError(401, "invalid_signature", f"{what} does not match the service's webhook secret")
        await publish_on(state.bus, *[_encoded(result, t) for t in verified])
        await _answer(send, 202, to_json({"delivery_id": result.delivery_id, "services": len(verified)}))


github = _Receiver("github")
gitlab = _Receiver("gitlab")

# For the app's fast dispatch of POSTs (app.Gateway); the routes below serve the docs and 405s.
ENDPOINTS = {"/webhooks/github": github, "/webhooks/gitlab": gitlab}

routes: list[BaseRoute] = [
    Route("/webhooks/github", github, methods=["POST"]),
    Route("/webhooks/gitlab", gitlab, methods=["POST"]),
]
