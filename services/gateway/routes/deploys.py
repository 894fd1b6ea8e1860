"""Deploys: deploy a successful version, roll back, unpin a target, deploy history (202 + events)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from shared.events import DeployRequested, RollbackRequested, TargetPinChanged
from shared.events.deploys import DeployRequestedPayload, RollbackRequestedPayload, TargetPinChangedPayload
from shared.namespaces import namespace_refusal
from shared.rollback import rollback_source
from shared.settings import target_names

from ..auth import authorize
from ..body import read_json
from ..consistency import accepted, until_projected
from ..errors import ApiError
from ..io import db_call, publish, store_of
from ..ownership import owned_service
from ..render import jsonable, paging

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DEPLOYMENT_FIELDS = (
    "kind",
    "status",
    "target",
    "namespace",
    "application",
    "version_id",
    "to_version_id",
    "image",
    "digest",
    "actor",
    "requested_at",
    "started_at",
    "finished_at",
    "duration",
    "reason",
    "detail",
)


def _name(v: str | None) -> str | None:
    if v is not None and not _NAME.match(v):
        raise ValueError("must be 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit")
    return v


class DeployIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version_id: str = Field(min_length=1, max_length=200)
    target: str = Field(min_length=1, max_length=200, description="one of the server's configured targets")
    namespace: str | None = Field(None, json_schema_extra={"pattern": _NAME.pattern})
    application: str | None = Field(None, json_schema_extra={"pattern": _NAME.pattern})
    _check = field_validator("namespace", "application")(_name)


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    to_version_id: str | None = Field(None, min_length=1, max_length=200,
                                      description="default: the previous successful deploy")
    target: str | None = Field(None, min_length=1, max_length=200)


class UnpinIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    target: str = Field(min_length=1, max_length=200)


def _known_target(request: Request, target: str) -> None:
    names = target_names(request.app.state.settings)
    if target not in names:
        raise ApiError(
            422,
            "unknown_target",
            f"unknown target {target!r}; configured targets: {', '.join(sorted(names)) or 'none'}",
            "target",
        )


def _allowed_namespace(request: Request, target: str, namespace: str | None, user_id: str) -> None:
    cluster = request.app.state.settings.kubernetes_clusters.get(target)
    refusal = cluster and namespace_refusal(target, cluster, namespace, user_id)
    if refusal:
        raise ApiError(422, "namespace_not_allowed", refusal, "namespace")


async def _successful_version(
    request: Request, service_id: str, version_id: str, field: str
) -> dict[str, Any]:
    doc = await db_call(store_of(request).versions.find_one, {"_id": version_id})
    if not doc or doc.get("service_id") != service_id:
        raise ApiError(404, "version_not_found", f"version {version_id!r} not found in this service", field)
    if doc.get("status") != "success":
        raise ApiError(
            409,
            "version_not_successful",
            f"version {doc.get('name', version_id)!r} is {doc.get('status')}: only successful versions "
            "can be deployed",
            field,
        )
    return doc


async def _requested(request: Request, user_id: str, event: DeployRequested | RollbackRequested) -> Response:
    """Publish a deploy or rollback request; answer once its deployment is readable (else 202 + Retry-After)."""
    await publish(request, event)
    deployment_id, service_id = event.payload.deployment_id, event.payload.service_id
    visible = await until_projected(request, "deployments", deployment_id)
    return accepted(
        {"deployment_id": deployment_id},
        f"/api/v1/{user_id}/services/{service_id}/deployments",
        visible,
        created=False,
    )


async def deploy(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    service_id = request.path_params["service_id"]
    await owned_service(request, user_id, service_id)
    body = await read_json(request, DeployIn)
    _known_target(request, body.target)
    _allowed_namespace(request, body.target, body.namespace, user_id)
    version = await _successful_version(request, service_id, body.version_id, "version_id")
    deployment_id = uuid.uuid4().hex
    return await _requested(
        request,
        user_id,
        DeployRequested.make(
            service_id,
            DeployRequestedPayload(
                deployment_id=deployment_id,
                service_id=service_id,
                user_id=user_id,
                version_id=body.version_id,
                target=body.target,
                namespace=body.namespace,
                application=body.application,
                kind="deploy",
                image=version.get("image"),
                digest=version.get("digest"),
            ),
            actor=user_id,
        ),
    )


async def rollback(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    service_id = request.path_params["service_id"]
    await owned_service(request, user_id, service_id)
    body = await read_json(request, RollbackIn)
    if body.target is not None:
        _known_target(request, body.target)
    if body.to_version_id is not None:
        await _successful_version(request, service_id, body.to_version_id, "to_version_id")
    else:
        query: dict[str, Any] = {"service_id": service_id, "status": "success"}
        if body.target is not None:
            query["target"] = body.target
        done = await db_call(
            lambda: list(store_of(request).deployments.find(query).sort("finished_at", -1).limit(100))
        )
        if rollback_source(done, body.target) is None:
            raise ApiError(
                409,
                "nothing_to_roll_back",
                "no earlier successful deployment to roll back to"
                + (f" on target {body.target!r}" if body.target else ""),
            )
    deployment_id = uuid.uuid4().hex
    return await _requested(
        request,
        user_id,
        RollbackRequested.make(
            service_id,
            RollbackRequestedPayload(
                deployment_id=deployment_id,
                service_id=service_id,
                user_id=user_id,
                to_version_id=body.to_version_id,
                target=body.target,
            ),
            actor=user_id,
        ),
    )


async def unpin(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    service_id = request.path_params["service_id"]
    await owned_service(request, user_id, service_id)
    body = await read_json(request, UnpinIn)
    _known_target(request, body.target)
    await publish(
        request,
        TargetPinChanged.make(
            service_id,
            TargetPinChangedPayload(
                service_id=service_id, target=body.target, pinned=False, reason=f"unpinned by {user_id}"
            ),
            actor=user_id,
        ),
    )
    return JSONResponse({"target": body.target, "pinned": False}, status_code=202)


async def list_deployments(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    service_id = request.path_params["service_id"]
    await owned_service(request, user_id, service_id)
    limit, offset = paging(request)
    store = store_of(request)

    def read() -> tuple[list[dict[str, Any]], int, list[dict[str, Any]], dict[str, Any]]:
        query = {"service_id": service_id}
        docs = list(
            store.deployments.find(query).sort([("requested_at", -1), ("_id", -1)]).skip(offset).limit(limit)
        )
        total = store.deployments.count_documents(query)
        pins = list(store.targets.find({"service_id": service_id}))
        ids = list({d.get("version_id") for d in docs if d.get("version_id")})
        names = {v["_id"]: v.get("name") for v in store.versions.find({"_id": {"$in": ids}}, {"name": 1})}
        return docs, total, pins, names

    docs, total, pins, names = await db_call(read)
    items = []
    for d in docs:
        item = {"deployment_id": d["_id"], **{k: d.get(k) for k in _DEPLOYMENT_FIELDS}}
        item["version_name"] = names.get(d.get("version_id") or "")
        items.append(item)
    targets = [
        {
            k: t.get(k)
            for k in (
                "target",
                "pinned",
                "pin_reason",
                "current_deployment_id",
                "current_version_id",
                "current_digest",
            )
        }
        for t in pins
    ]
    return JSONResponse(
        jsonable({"deployments": items, "targets": targets, "total": total, "limit": limit, "offset": offset})
    )


routes: list[BaseRoute] = [
    Route("/api/v1/{user_id}/services/{service_id}/deploy", deploy, methods=["POST"]),
    Route("/api/v1/{user_id}/services/{service_id}/rollback", rollback, methods=["POST"]),
    Route("/api/v1/{user_id}/services/{service_id}/unpin", unpin, methods=["POST"]),
    Route("/api/v1/{user_id}/services/{service_id}/deployments", list_deployments, methods=["GET"]),
]
