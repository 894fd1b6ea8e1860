"""POST /webhooks/github and /webhooks/gitlab: verify, then one PushReceived per matching service."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from shared.events import PushReceived
from shared.events.webhooks import PushReceivedPayload

from ..body import read_body
from ..errors import ApiError
from ..io import publish
from ..repo_index import HookTarget, RepoIndex
from ..webhooks import PARSERS, Ignored, Push, WebhookError, github_signature_ok, gitlab_token_ok


def _verifier(provider: str, request: Request, body: bytes):  # type: ignore[no-untyped-def]
    if provider == "github":
        header = request.headers.get("x-hub-signature-256")
        return lambda t: t.secret is not None and github_signature_ok(t.secret, body, header)
    token = request.headers.get("x-gitlab-token")
    return lambda t: t.secret is not None and gitlab_token_ok(t.secret, token)


def _event(push: Push, target: HookTarget) -> PushReceived:
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


async def _receive(request: Request, provider: str) -> Response:
    body = await read_body(request)
    try:
        result = PARSERS[provider](request.headers, body)
    except WebhookError as exc:
        raise ApiError(400, "invalid_webhook", str(exc)) from None
    if isinstance(result, Ignored):
        return JSONResponse({"ignored": result.reason})
    index: RepoIndex = request.app.state.repo_index
    targets = await index.lookup(result.repo_urls)
    if not targets:
        raise ApiError(404, "repository_not_found", "no service is registered for this repository")
    verify = _verifier(provider, request, body)
    verified = [t for t in targets if verify(t)]
    if not verified:  # the secret may have been rotated since the snapshot was taken
        verified = [t for t in await index.fresh_secrets(targets) if verify(t)]
    if not verified:
        what = "X-Hub-Signature-256" if provider == "github" else "X-Gitlab-Token"
        raise ApiError(401, "invalid_signature", f"{what} does not match the service's webhook secret")
    await publish(request, *[_event(result, t) for t in verified])
    return JSONResponse({"delivery_id": result.delivery_id, "services": len(verified)}, status_code=202)


async def github(request: Request) -> Response:
    return await _receive(request, "github")


async def gitlab(request: Request) -> Response:
    return await _receive(request, "gitlab")


routes: list[BaseRoute] = [
    Route("/webhooks/github", github, methods=["POST"]),
    Route("/webhooks/gitlab", gitlab, methods=["POST"]),
]
