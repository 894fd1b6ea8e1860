"""Request authentication: the bearer token names a user, who must be the `{user_id}` of the path."""

from __future__ import annotations

from starlette.requests import Request

from shared.auth import bearer, user_for_token

from .errors import ApiError
from .io import db_call, store_of


async def authenticate(request: Request) -> str:
    """The user owning the request's bearer token; 401 when it is missing or unknown."""
    token = bearer(request.headers.get("authorization"))
    if not token:
        raise ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)")
    user = await db_call(user_for_token, store_of(request), token)
    if user is None:
        raise ApiError(401, "unauthorized", "invalid token")
    return user


async def authorize(request: Request, user_id: str) -> str:
    """Authenticate and check that the token belongs to `user_id` (403 otherwise)."""
    user = await authenticate(request)
    if user != user_id:
        raise ApiError(403, "forbidden", "this token may not act for another user")
    return user
