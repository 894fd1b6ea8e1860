"""The caller's account: who a token belongs to, and rotating or revoking that token."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from shared.auth import revoke_token, rotate_token

from ..auth import authenticate, authorize
from ..errors import ApiError
from ..io import db_call, store_of


async def me(request: Request) -> Response:
    """`GET /api/v1/me`: the user id a token belongs to (clients that only hold a token start here)."""
    return JSONResponse({"user_id": await authenticate(request)})


async def rotate(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    token = await db_call(rotate_token, store_of(request), user_id)
    if token is None:
        raise ApiError(404, "not_found", f"no user {user_id!r}")
    return JSONResponse({"user_id": user_id, "token": token})


async def revoke(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    await db_call(revoke_token, store_of(request), user_id)
    return JSONResponse({"user_id": user_id, "revoked": True})


routes: list[BaseRoute] = [
    Route("/api/v1/me", me, methods=["GET"]),
    Route("/api/v1/{user_id}/token/rotate", rotate, methods=["POST"]),
    Route("/api/v1/{user_id}/token/revoke", revoke, methods=["POST"]),
]
