"""Versions: create (VersionRequested; 201 once projected, else 202), read with stages, list per service, cancel."""

from __future__ import annotations

import re
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymongo.errors import DuplicateKeyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from shared.events import VersionCancelled, VersionRequested
from shared.events.versions import VersionCancelledPayload, VersionRequestedPayload
from shared.status import VERSION_ACTIVE_STATUSES

from ..auth import authorize
from ..body import read_json
from ..consistency import accepted, until_projected
from ..errors import ApiError
from ..io import db_call, publish, store_of
from ..ownership import owned_service, owned_version
from ..render import paging, version_json

OPERATIONS = ("integration", "publish", "deploy")
MAX_TAG_NAME = 128
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_BAD_SUBSTRINGS = ("..", "@{", "//")
_BAD_STARTS = ("/", "-")
_BAD_ENDS = ("/", ".", ".lock")
_COMMIT = re.compile(r"^[0-9A-Za-z._/-]{1,100}$")


def tag_name_problem(name: str) -> str | None:
    """Why `name` is not a valid git tag name (git check-ref-format rules), or None."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_TAG_NAME:
        return f"must be at most {MAX_TAG_NAME} characters"
    if _BAD_REF_CHARS.search(name):
        return "must not contain spaces, control characters or any of ~ ^ : ? * [ \\"
    if any(bad in name for bad in _BAD_SUBSTRINGS) or name == "@":
        return "must not contain '..', '@{' or '//', nor be '@'"
    if name.startswith(_BAD_STARTS) or name.endswith(_BAD_ENDS):
        return "must not start with '/' or '-', nor end with '/', '.' or '.lock'"
    if any(part.startswith(".") for part in name.split("/")):
        return "no part may start with '.'"
    return None


def _alternatives(texts: tuple[str, ...]) -> str:
    return "|".join(re.escape(t) for t in texts)


# The same rules as a JSON Schema (for the API document), from the same constants.
TAG_NAME_SCHEMA: dict[str, Any] = {
    "minLength": 1,
    "maxLength": MAX_TAG_NAME,
    "pattern": f"^[^{_BAD_REF_CHARS.pattern[1:-1]}]*$",
    "not": {
        "anyOf": [
            {"const": "@"},
            {"pattern": _alternatives(_BAD_SUBSTRINGS)},
            {"pattern": f"^({_alternatives(_BAD_STARTS)})"},
            {"pattern": f"({_alternatives(_BAD_ENDS)})$"},
            {"pattern": r"(^|/)\."},
        ]
    },
    "description": "a valid git tag name (git check-ref-format), unique per service",
}


class VersionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    service_id: str = Field(min_length=1, max_length=200)
    name: str = Field(json_schema_extra=TAG_NAME_SCHEMA)
    description: str = Field("", max_length=4000)
    operations: list[str] | None = Field(
        None, json_schema_extra={"items": {"type": "string", "enum": list(OPERATIONS)}}
    )
    commit: str | None = Field(
        None, json_schema_extra={"pattern": _COMMIT.pattern,
                                 "description": "commit sha or svn revision; default: the branch head"}
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        problem = tag_name_problem(v)
        if problem:
            raise ValueError(f"not a valid tag name: {problem}")
        return v

    @field_validator("operations")
    @classmethod
    def _operations(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        bad = [op for op in v if op not in OPERATIONS]
        if bad:
            raise ValueError(f"unknown operation(s) {bad}; allowed: {', '.join(OPERATIONS)}")
        return list(dict.fromkeys(v))

    @field_validator("commit")
    @classmethod
    def _commit(cls, v: str | None) -> str | None:
        if v is not None and not _COMMIT.match(v):
            raise ValueError("must be a commit id (hex sha, svn revision or ref name)")
        return v


async def create_version(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    body = await read_json(request, VersionIn)
    await owned_service(request, user_id, body.service_id)
    store = store_of(request)
    version_id = uuid.uuid4().hex
    reservation = f"version:{body.service_id}/{body.name}"
    try:
        await db_call(store.reservations.insert_one, {"_id": reservation, "ref": version_id})
    except DuplicateKeyError:
        raise ApiError(
            409, "version_exists", f"the service already has a version named {body.name!r}", "name"
        ) from None
    event = VersionRequested.make(
        version_id,
        VersionRequestedPayload(
            service_id=body.service_id,
            user_id=user_id,
            name=body.name,
            description=body.description,
            commit=body.commit,
            trigger="api",
            operations=body.operations,  # type: ignore[arg-type]
        ),
        actor=user_id,
    )
    try:
        await publish(request, event)
    except BaseException:
        try:
            await db_call(store.reservations.delete_one, {"_id": reservation, "ref": version_id})
        except Exception:  # noqa: BLE001 - best effort
            pass
        raise
    visible = await until_projected(request, "versions", version_id)
    return accepted({"version_id": version_id}, f"/api/v1/{user_id}/versions/{version_id}", visible)


async def get_version(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    doc = await owned_version(request, user_id, request.path_params["version_id"])
    return JSONResponse(version_json(doc))


async def list_versions(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    service_id = request.path_params["service_id"]
    await owned_service(request, user_id, service_id)
    limit, offset = paging(request)
    store = store_of(request)
    query = {"service_id": service_id, "user_id": user_id}

    def read() -> tuple[list[dict[str, Any]], int]:
        cursor = store.versions.find(query).sort([("created_at", -1), ("_id", -1)]).skip(offset).limit(limit)
        return list(cursor), store.versions.count_documents(query)

    docs, total = await db_call(read)
    return JSONResponse(
        {"versions": [version_json(d) for d in docs], "total": total, "limit": limit, "offset": offset}
    )


async def cancel_version(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    version_id = request.path_params["version_id"]
    doc = await owned_version(request, user_id, version_id)
    status = doc.get("status")
    if status not in VERSION_ACTIVE_STATUSES:
        raise ApiError(409, "version_finished", f"version {version_id!r} already finished ({status})")
    await publish(
        request,
        VersionCancelled.make(
            version_id, VersionCancelledPayload(reason=f"cancelled by {user_id}"), actor=user_id
        ),
    )
    return JSONResponse({"version_id": version_id, "status": "cancelling"}, status_code=202)


routes: list[BaseRoute] = [
    Route("/api/v1/{user_id}/versions", create_version, methods=["POST"]),
    Route("/api/v1/{user_id}/versions/{version_id}", get_version, methods=["GET"]),
    Route("/api/v1/{user_id}/versions/{version_id}/cancel", cancel_version, methods=["POST"]),
    Route("/api/v1/{user_id}/services/{service_id}/versions", list_versions, methods=["GET"]),
]
