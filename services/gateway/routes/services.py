"""Services: create (ServiceCreated; 201 once projected, else 202), list, read, update (ServiceUpdated),
delete (ServiceDeleted)."""

from __future__ import annotations

import json
import re
import secrets as pysecrets
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pymongo.errors import DuplicateKeyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from shared.events import Repository, ServiceCreated, ServiceDeleted, ServiceUpdated
from shared.events.services import (
    CommitStatusConfig,
    ServiceCreatedPayload,
    ServiceDeletedPayload,
    ServiceUpdatedPayload,
)
from shared.repo_url import RepoUrlRefused, check_repo_url
from shared.secretbox import SecretBox

from ..auth import authorize
from ..body import read_json
from ..consistency import accepted, until_projected
from ..errors import ApiError
from ..io import db_call, publish, store_of
from ..ownership import owned_service
from ..render import paging, service_json
from ..repo_index import hook_fields

SERVICE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
# Bounds that keep a service's events far below a broker's message limit (Kafka's default is 1 MiB;
# the secrets' names travel in events, their values only into the secrets collection).
MAX_SECRETS = 100
MAX_SECRET_BYTES = 64 * 1024
MAX_DEPLOY_TARGETS = 50
MAX_DEPLOY_TARGETS_BYTES = 64 * 1024
# Letters, digits, `_` and `-`: a key is stored as a document field (no NUL, `$` or `.`).
_TargetKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
_TargetValue = Annotated[str, StringConstraints(max_length=2000)]
DeployTargets = Annotated[
    list[Annotated[dict[_TargetKey, _TargetValue], Field(max_length=20)]], Field(max_length=MAX_DEPLOY_TARGETS)
]
Secrets = Annotated[
    dict[str, Annotated[str, StringConstraints(max_length=MAX_SECRET_BYTES)]],
    Field(max_length=MAX_SECRETS, json_schema_extra={"propertyNames": {"pattern": SECRET_NAME.pattern}}),
]
# A repository URL is stripped, then must hold no white space (RepositoryIn._url).
URL_SHAPE = r"^\s*\S+\s*$"


class RepositoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    url: str = Field(min_length=1, max_length=2000, json_schema_extra={"pattern": URL_SHAPE})
    vcs: str = Field("git", min_length=1, max_length=32, description="git or svn")
    username: str | None = Field(None, max_length=200)
    password: str | None = Field(None, max_length=4000)
    token: str | None = Field(None, max_length=4000)
    # A provider the owner connected with OAuth (/{user}/services/{provider}/requesttoken): its token
    # clones and tags this repository.
    oauth: Literal["github", "gitlab"] | None = Field(
        None, description="clone and tag with the owner's OAuth token for this provider (connect first: "
        "/{user_id}/services/{code_repository}/requesttoken); not with username, password or token")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.strip() or any(c.isspace() for c in v.strip()):
            raise ValueError("must be a repository URL without spaces")
        return v.strip()

    @model_validator(mode="after")
    def _one_credential(self) -> RepositoryIn:
        if self.oauth and (self.password or self.token or self.username):
            raise ValueError("oauth replaces username, password and token: give one or the other")
        return self


class RepositoryPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    url: str | None = Field(None, min_length=1, max_length=2000)
    vcs: str | None = Field(None, min_length=1, max_length=32)
    username: str | None = Field(None, max_length=200)
    password: str | None = Field(None, max_length=4000)
    token: str | None = Field(None, max_length=4000)


class CommitStatusIn(BaseModel):
    """Commit status reporting: the provider's API, the repository there, and which secret holds the token."""

    model_config = ConfigDict(extra="forbid", strict=True)
    provider: Literal["github", "gitlab"]
    api_url: str = Field(min_length=1, max_length=500, pattern=r"^https?://[^\s]+$")
    repository: str = Field(min_length=1, max_length=300, pattern=r"^[A-Za-z0-9_.\-/]+$")
    # Unset: the owner's OAuth token for `provider` (needs repository.oauth of the same provider).
    token_secret: str | None = Field(None, min_length=1, max_length=128,
                                     pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")

    def config(self) -> CommitStatusConfig:
        return CommitStatusConfig(**self.model_dump())


def _check_secrets(v: dict[str, str] | None) -> dict[str, str] | None:
    for name, value in (v or {}).items():
        if not SECRET_NAME.match(name):
            raise ValueError(f"invalid secret name {name[:50]!r}")
        if len(value.encode()) > MAX_SECRET_BYTES:
            raise ValueError(f"secret {name!r} is larger than {MAX_SECRET_BYTES} bytes")
    return v


def _check_targets(v: list[dict[str, str]] | None) -> list[dict[str, str]] | None:
    if v and len(json.dumps(v).encode()) > MAX_DEPLOY_TARGETS_BYTES:
        raise ValueError(f"must be at most {MAX_DEPLOY_TARGETS_BYTES} bytes as JSON")
    return v


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    config_file: str | None = Field(None, min_length=1, max_length=500,
                                    description="default fornax.yml (caicloud.yml is also read)")
    webhook_secret: str | None = Field(None, min_length=8, max_length=500, description="generated when omitted")
    secrets: Secrets | None = Field(None, description="values available to builds, masked in logs, stored "
                                    "encrypted (each at most 64 KiB)")
    deploy_targets: DeployTargets | None = Field(None, description="at most 64 KiB as JSON")
    public: bool | None = Field(None, description="its badge is readable without a token")
    commit_status: CommitStatusIn | None = Field(
        None, description="report each version's status on its commit; token_secret names the service secret "
        "holding the API token (unset: the owner's OAuth token of the repository's oauth provider)")
    # Credentials may also be given at the top level (as in the original API).
    username: str | None = Field(None, max_length=200)
    password: str | None = Field(None, max_length=4000)
    token: str | None = Field(None, max_length=4000)

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return _check_secrets(v)

    @field_validator("deploy_targets")
    @classmethod
    def _targets_size(cls, v: list[dict[str, str]] | None) -> list[dict[str, str]] | None:
        return _check_targets(v)


class ServiceIn(_Common):
    name: str = Field(max_length=63, json_schema_extra={"pattern": SERVICE_NAME.pattern})
    description: str = Field("", max_length=4000)
    repository: RepositoryIn

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SERVICE_NAME.match(v):
            raise ValueError("must be a DNS label: lower-case letters, digits and '-', at most 63 characters")
        return v


class ServicePatch(_Common):
    description: str | None = Field(None, max_length=4000)
    repository: RepositoryPatch | None = None


def _secrets_doc(box: SecretBox, service_id: str, user_id: str, body: ServiceIn, webhook_secret: str) -> dict[str, Any]:
    return box.seal_doc(
        {
            "_id": service_id,
            "webhook_secret": webhook_secret,
            "repo_password": body.repository.password or body.password,
            "repo_token": body.repository.token or body.token,
            "values": dict(body.secrets or {}),
            **hook_fields(user_id, body.repository.url),
        }
    )


def _box(request: Request) -> SecretBox:
    return SecretBox.of(request.app.state.settings)


def _allowed_url(request: Request, url: str) -> None:
    """422 unless the server's repository URL policy allows `url` (schemes, local, credentials)."""
    settings = request.app.state.settings
    try:
        check_repo_url(url, schemes=settings.repo_url_schemes, allow_local=settings.repo_allow_local)
    except RepoUrlRefused as exc:
        raise ApiError(422, "validation_error", str(exc), exc.field) from None


async def create_service(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    body = await read_json(request, ServiceIn)
    _check_status_secret(body.commit_status, set(body.secrets or {}), body.repository.oauth)
    _allowed_url(request, body.repository.url)
    store = store_of(request)
    service_id = uuid.uuid4().hex
    webhook_secret = body.webhook_secret or pysecrets.token_hex(20)
    if body.repository.oauth and not await db_call(
            store["oauth_tokens"].find_one, {"_id": f"{user_id}:{body.repository.oauth}"}, {"_id": 1}):
        raise ApiError(422, "validation_error", f"not connected to {body.repository.oauth}: authorize first "
                       f"(/{user_id}/services/{body.repository.oauth}/requesttoken)", "repository.oauth")
    reservation = f"service:{user_id}/{body.name}"
    try:
        await db_call(store.reservations.insert_one, {"_id": reservation, "ref": service_id})
    except DuplicateKeyError:
        raise ApiError(
            409, "service_exists", f"a service named {body.name!r} already exists", "name"
        ) from None
    try:
        await db_call(
            store.secrets.insert_one, _secrets_doc(_box(request), service_id, user_id, body, webhook_secret)
        )
        event = ServiceCreated.make(
            service_id,
            ServiceCreatedPayload(
                user_id=user_id,
                name=body.name,
                description=body.description,
                repository=Repository(
                    url=body.repository.url,
                    vcs=body.repository.vcs,
                    username=body.repository.username or body.username,
                    oauth=body.repository.oauth,
                ),
                config_file=body.config_file,
                deploy_targets=body.deploy_targets or [],
                secret_names=sorted(body.secrets or {}),
                public=bool(body.public),
                commit_status=body.commit_status.config() if body.commit_status else None,
            ),
            actor=user_id,
        )
        await publish(request, event)
    except BaseException:
        await _undo(store, reservation, service_id)
        raise
    visible = await until_projected(request, "services", service_id)
    return accepted(
        {"service_id": service_id, "webhook_secret": webhook_secret},
        f"/api/v1/{user_id}/services/{service_id}",
        visible,
    )


def _check_status_secret(status: CommitStatusIn | None, secret_names: set[str], oauth: str | None = None) -> None:
    if status is not None and status.token_secret is None:
        if oauth != status.provider:
            raise ApiError(422, "validation_error",
                           f"commit_status.token_secret: required unless repository.oauth is {status.provider!r}",
                           "commit_status.token_secret")
        return
    if status is not None and status.token_secret not in secret_names:
        raise ApiError(422, "validation_error",
                       f"commit_status.token_secret: {status.token_secret!r} is not one of the service's secrets",
                       "commit_status.token_secret")


async def _undo(store: Any, reservation: str, service_id: str) -> None:
    """Remove what a failed create wrote, so nothing is left half-written."""
    for coll, query in (
        (store.secrets, {"_id": service_id}),
        (store.reservations, {"_id": reservation, "ref": service_id}),
    ):
        try:
            await db_call(coll.delete_one, query)
        except Exception:  # noqa: BLE001 - best effort: the store itself may be what failed
            pass


async def list_services(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    limit, offset = paging(request, default=100, maximum=500)
    store = store_of(request)
    query = {"user_id": user_id, "deleted": {"$ne": True}}

    def read() -> tuple[list[dict[str, Any]], int]:
        docs = list(
            store.services.find(query).sort([("created_at", 1), ("_id", 1)]).skip(offset).limit(limit)
        )
        return docs, store.services.count_documents(query)

    docs, total = await db_call(read)
    return JSONResponse(
        {"services": [service_json(d) for d in docs], "total": total, "limit": limit, "offset": offset}
    )


async def get_service(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    doc = await owned_service(request, user_id, request.path_params["service_id"])
    return JSONResponse(service_json(doc))


async def update_service(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    service_id = request.path_params["service_id"]
    doc = await owned_service(request, user_id, service_id)
    body = await read_json(request, ServicePatch)
    names = set(body.secrets) if body.secrets is not None else set(doc.get("secret_names") or [])
    _check_status_secret(body.commit_status, names, (doc.get("repository") or {}).get("oauth"))
    store = store_of(request)
    repo: Repository | None = None
    patch = body.repository
    current = doc.get("repository") or {}
    new_username = (patch.username if patch else None) or body.username
    if (patch and (patch.url or patch.vcs or patch.username)) or body.username:
        repo = Repository(
            url=(patch.url if patch and patch.url else current.get("url", "")),
            vcs=(patch.vcs if patch and patch.vcs else current.get("vcs", "git")),
            username=new_username or current.get("username"),
            oauth=current.get("oauth"),
        )
        _allowed_url(request, repo.url)
    changes: dict[str, Any] = {}
    if body.webhook_secret is not None:
        changes["webhook_secret"] = body.webhook_secret
    if (patch and patch.password) or body.password:
        changes["repo_password"] = (patch.password if patch else None) or body.password
    if (patch and patch.token) or body.token:
        changes["repo_token"] = (patch.token if patch else None) or body.token
    if body.secrets is not None:
        changes["values"] = dict(body.secrets)
    url = repo.url if repo is not None else current.get("url")
    if url and (changes or repo is not None):  # (also heals a document written before the lookup key)
        changes.update(hook_fields(user_id, str(url)))
    old = await db_call(store.secrets.find_one, {"_id": service_id}) if changes else None
    if changes:
        await db_call(
            store.secrets.update_one, {"_id": service_id}, {"$set": _box(request).seal_doc(changes)}, upsert=True
        )
    event = ServiceUpdated.make(
        service_id,
        ServiceUpdatedPayload(
            user_id=user_id,
            description=body.description,
            repository=repo,
            config_file=body.config_file,
            deploy_targets=body.deploy_targets,
            secret_names=sorted(body.secrets) if body.secrets is not None else None,
            public=body.public,
            commit_status=body.commit_status.config() if body.commit_status else None,
        ),
        actor=user_id,
    )
    try:
        await publish(request, event)
    except BaseException:
        if changes:
            try:
                if old is None:
                    await db_call(store.secrets.delete_one, {"_id": service_id})
                else:
                    await db_call(store.secrets.replace_one, {"_id": service_id}, old)
            except Exception:  # noqa: BLE001 - best effort
                pass
        raise
    return JSONResponse({"service_id": service_id}, status_code=202)


async def delete_service(request: Request) -> Response:
    user_id = await authorize(request, request.path_params["user_id"])
    service_id = request.path_params["service_id"]
    doc = await owned_service(request, user_id, service_id)
    await publish(
        request, ServiceDeleted.make(service_id, ServiceDeletedPayload(user_id=user_id), actor=user_id)
    )
    store = store_of(request)
    await db_call(
        store.reservations.delete_one, {"_id": f"service:{user_id}/{doc.get('name')}", "ref": service_id}
    )
    await db_call(store.secrets.delete_one, {"_id": service_id})
    return JSONResponse({"service_id": service_id}, status_code=202)


routes: list[BaseRoute] = [
    Route("/api/v1/{user_id}/services", create_service, methods=["POST"]),
    Route("/api/v1/{user_id}/services", list_services, methods=["GET"]),
    Route("/api/v1/{user_id}/services/{service_id}", get_service, methods=["GET"]),
    Route("/api/v1/{user_id}/services/{service_id}", update_service, methods=["PUT"]),
    Route("/api/v1/{user_id}/services/{service_id}", delete_service, methods=["DELETE"]),
]
