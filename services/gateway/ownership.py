"""Finding a user's own resources in the read models; someone else's and a missing one look the same."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from .errors import ApiError
from .io import db_call, store_of


async def owned_service(request: Request, user_id: str, service_id: str) -> dict[str, Any]:
    """The (not deleted) service `service_id` of `user_id`, or a 404."""
    doc = await db_call(store_of(request).services.find_one, {"_id": service_id})
    if not doc or doc.get("user_id") != user_id or doc.get("deleted"):
        raise ApiError(404, "service_not_found", f"service {service_id!r} not found")
    return doc


async def owned_version(request: Request, user_id: str, version_id: str) -> dict[str, Any]:
    """The version `version_id` of `user_id`, or a 404."""
    doc = await db_call(store_of(request).versions.find_one, {"_id": version_id})
    if not doc or doc.get("user_id") != user_id:
        raise ApiError(404, "version_not_found", f"version {version_id!r} not found")
    return doc
