"""Status badges: `GET /badges/{user_id}/{service}.svg[?branch=]`, a shields-style SVG of the latest version.

Readable without a token only for services their owner marked `public`; a private service's badge needs
its owner's token (and answers 404 otherwise, so a badge URL does not reveal that a private service exists).
`Cache-Control: no-cache` with an `ETag`: image proxies (GitHub's camo) revalidate each view and get a 304
while the status is unchanged.
"""

from __future__ import annotations

import hashlib
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from shared.auth import bearer, user_for_token
from shared.status import VERSION_ACTIVE_STATUSES

from ..errors import ApiError
from ..io import db_call, store_of

# message and colour per outcome (shields.io's palette)
OUTCOMES = {
    "success": ("passing", "#4c1"),
    "failed": ("failing", "#e05d44"),
    "running": ("running", "#dfb317"),
    "cancelled": ("cancelled", "#9f9f9f"),
    "none": ("none", "#9f9f9f"),
}
LABEL = "build"


def outcome(status: str | None) -> str:
    """The badge outcome of a version status (None: the service has no version)."""
    if status is None:
        return "none"
    if status in VERSION_ACTIVE_STATUSES:
        return "running"
    return status if status in OUTCOMES else "none"


def _width(text: str) -> int:
    # Verdana 11px averages ~6.5 px a character; shields pads each side by 5 px.
    return int(len(text) * 6.5) + 10


def render(label: str, message: str, colour: str) -> str:
    """A flat shields-style badge; the texts are escaped."""
    lw, mw = _width(label), _width(message)
    total = lw + mw
    lab, msg = escape(label), escape(message)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{lab}: {msg}"><title>{lab}: {msg}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        '<stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{mw}" height="20" fill="{colour}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{lw / 2:.1f}" y="14">{lab}</text><text x="{lw + mw / 2:.1f}" y="14">{msg}</text></g></svg>'
    )


async def badge(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    name = request.path_params["service"]
    branch = request.query_params.get("branch")
    if branch is not None and not 0 < len(branch) <= 255:
        raise ApiError(400, "bad_request", "branch: must be 1 to 255 characters", "branch")
    store = store_of(request)

    def read() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        service = store.services.find_one({"user_id": user_id, "name": name, "deleted": {"$ne": True}})
        if service is None:
            return None, None
        query: dict[str, Any] = {"service_id": service["_id"]}
        if branch:
            query["branch"] = branch
        latest = next(iter(store.versions.find(query, {"status": 1}).sort([("created_at", -1)]).limit(1)), None)
        return service, latest

    service, latest = await db_call(read)
    if service is not None and not service.get("public"):
        token = bearer(request.headers.get("authorization"))
        owner = await db_call(user_for_token, store, token) if token else None
        if owner != user_id:
            service = None
    if service is None:
        raise ApiError(404, "not_found", f"no public service {name!r} of user {user_id!r} "
                       "(a private service's badge needs its owner's token)")
    message, colour = OUTCOMES[outcome(latest.get("status") if latest else None)]
    svg = render(LABEL, message, colour).encode()
    etag = '"' + hashlib.sha256(svg).hexdigest()[:32] + '"'
    headers = {"Cache-Control": "no-cache", "ETag": etag}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(svg, media_type="image/svg+xml", headers=headers)


routes: list[BaseRoute] = [Route("/badges/{user_id}/{service}.svg", badge, methods=["GET"])]
