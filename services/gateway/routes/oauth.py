"""OAuth for private repositories (the seed's paths, and /api/v1 twins), {code_repository} = github|gitlab:

- `GET /{user_id}/services/{code_repository}/requesttoken`  (bearer) → 200 {"authorize_url"}: the
  provider's authorize URL with a fresh `state` bound to the user (single use, expires).
- `GET /services/{code_repository}/authcallback?code&state`  (the provider redirects the browser here;
  no bearer: the state names the user) → exchanges the code for a token, stored encrypted.
- `GET /{user_id}/services/{code_repository}/listrepo`       (bearer) → the user's repositories.
- `GET|POST|DELETE /{user_id}/services/{code_repository}/logout` (bearer) → deletes the stored token.

A service created with `repository: {url, vcs: git, oauth: <provider>}` clones and tags with its
owner's token (the builder reads it; it is never in an event, a log or a response).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from shared import oauth

from ..auth import authorize
from ..errors import ApiError
from ..io import db_call, store_of
from .compat import CompatRoute

_TIMEOUT = httpx.Timeout(10.0)


def _app(request: Request) -> tuple[str, Any]:
    provider = request.path_params["code_repository"]
    if provider not in oauth.PROVIDERS:
        raise ApiError(404, "not_found", f"code_repository must be one of {', '.join(oauth.PROVIDERS)}",
                       field="code_repository")
    app = request.app.state.settings.oauth_providers.get(provider)
    if app is None:
        raise ApiError(404, "not_found", f"OAuth for {provider} is not configured on this server "
                                         "(settings oauth_providers)", field="code_repository")
    if request.app.state.settings.secrets_key is None:
        raise ApiError(503, "unavailable", "OAuth tokens cannot be stored: settings secrets_key is not set")
    return provider, app


def _callback_url(request: Request, provider: str) -> str:
    return f"{request.app.state.settings.oauth_callback_base.rstrip('/')}/services/{provider}/authcallback"


async def request_token(request: Request) -> Response:
    user = await authorize(request, request.path_params["user_id"])
    provider, app = _app(request)
    settings = request.app.state.settings
    state = await db_call(oauth.new_state, store_of(request), user, provider, settings.oauth_state_seconds)
    query = urlencode({"client_id": app.client_id, "redirect_uri": _callback_url(request, provider),
                       "response_type": "code", "state": state,
                       "scope": app.scope or oauth.STYLES[provider].default_scope})
    return JSONResponse({"authorize_url": f"{app.authorize_url}?{query}", "provider": provider,
                         "expires_in": int(settings.oauth_state_seconds)})


async def auth_callback(request: Request) -> Response:
    provider, app = _app(request)
    q = request.query_params
    error = q.get("error")
    if error:
        raise ApiError(400, "bad_request", f"{provider} refused the authorization: {error[:200]}", field="error")
    state, code = q.get("state"), q.get("code")
    if not state:
        raise ApiError(400, "bad_request", "state is missing", field="state")
    if not code:
        raise ApiError(400, "bad_request", "code is missing", field="code")
    user = await db_call(oauth.take_state, store_of(request), state, provider)
    if user is None:
        raise ApiError(400, "bad_request", "state is unknown, already used or expired: ask for a new "
                                           "authorization (requesttoken)", field="state")
    form = {"client_id": app.client_id, "client_secret": app.client_secret.get_secret_value(), "code": code,
            "redirect_uri": _callback_url(request, provider), "grant_type": "authorization_code"}
    try:
        async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
            resp = await client.post(app.token_url, data=form, headers={"Accept": "application/json"})
        data = resp.json() if resp.status_code == 200 else {}
    except (httpx.HTTPError, ValueError) as exc:
        raise ApiError(503, "unavailable", f"{provider} token exchange failed: {type(exc).__name__}") from None
    token = data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        why = data.get("error") if isinstance(data, dict) and data.get("error") else f"status {resp.status_code}"
        raise ApiError(400, "bad_request", f"{provider} did not grant a token ({str(why)[:200]})", field="code")
    try:
        await db_call(oauth.save_token, store_of(request), request.app.state.settings, user, provider, token)
    except oauth.TokensUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    return JSONResponse({"user_id": user, "provider": provider, "connected": True})


async def _token(request: Request, user: str, provider: str) -> str:
    try:
        token = await db_call(oauth.load_token, store_of(request), request.app.state.settings, user, provider)
    except oauth.TokensUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    if token is None:
        raise ApiError(409, "conflict", f"not connected to {provider}: authorize first "
                                        f"(/{user}/services/{provider}/requesttoken)", field="code_repository")
    return token


async def list_repos(request: Request) -> Response:
    user = await authorize(request, request.path_params["user_id"])
    provider, app = _app(request)
    token = await _token(request, user, provider)
    url = app.api_url.rstrip("/") + oauth.STYLES[provider].repos_path
    try:
        async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
            resp = await client.get(url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise ApiError(503, "unavailable", f"{provider} API unreachable: {type(exc).__name__}") from None
    if resp.status_code in (401, 403):
        raise ApiError(409, "conflict", f"{provider} no longer accepts the stored token: authorize again",
                       field="code_repository")
    try:
        items = resp.json()
    except ValueError:
        items = None
    if resp.status_code != 200 or not isinstance(items, list):
        raise ApiError(503, "unavailable", f"{provider} API answered {resp.status_code}")
    repos = [oauth.repo_entry(provider, i) for i in items if isinstance(i, dict)]
    return JSONResponse({"provider": provider, "items": repos, "total": len(repos)})


async def logout(request: Request) -> Response:
    user = await authorize(request, request.path_params["user_id"])
    provider = request.path_params["code_repository"]
    if provider not in oauth.PROVIDERS:
        raise ApiError(404, "not_found", f"code_repository must be one of {', '.join(oauth.PROVIDERS)}",
                       field="code_repository")
    removed = await db_call(oauth.delete_token, store_of(request), user, provider)
    return JSONResponse({"provider": provider, "disconnected": removed})


def _both(path: str, endpoint: Any, methods: list[str]) -> list[BaseRoute]:
    # The seed's form without /api/v1 never takes a fixed path's first segment (see compat.py).
    bare = CompatRoute if path.startswith("/{user_id}") else Route
    return [Route("/api/v1" + path, endpoint, methods=methods), bare(path, endpoint, methods=methods)]


routes: list[BaseRoute] = [
    *_both("/{user_id}/services/{code_repository}/requesttoken", request_token, ["GET"]),
    *_both("/services/{code_repository}/authcallback", auth_callback, ["GET"]),
    *_both("/{user_id}/services/{code_repository}/listrepo", list_repos, ["GET"]),
    *_both("/{user_id}/services/{code_repository}/logout", logout, ["GET", "POST", "DELETE"]),
]
