"""The pydantic models of the gateway's API, for its OpenAPI document.

Request bodies are the models the routes validate with (`routes/*`); responses are described here, field
for field as `render.py` and the routes write them. A field the read model may hold as null is nullable
here; one that is only sometimes present is optional.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, Field

from shared.events import Repository
from shared.events.services import CommitStatusConfig, RepoStatus
from shared.events.versions import StageName

from .routes.deploys import DeployIn, RollbackIn, UnpinIn
from .routes.services import ServiceIn, ServicePatch
from .routes.versions import VersionIn

__all__ = ["DeployIn", "RollbackIn", "UnpinIn", "ServiceIn", "ServicePatch", "VersionIn"]

VersionStatus = Literal["pending", "queued", "running", "success", "failed", "cancelled"]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = Field(None, description="the offending body field or parameter")


class Error(BaseModel):
    """Every error answer: {"error": {"code", "message", "field"?}}."""

    error: ErrorDetail


# -- services --------------------------------------------------------------------------------------------


class ServiceCreated(BaseModel):
    service_id: str
    webhook_secret: str = Field(description="the given one, or the one generated")


class ServiceAccepted(BaseModel):
    service_id: str


class Service(BaseModel):
    service_id: str
    name: str
    user_id: str
    repository: Repository
    description: str | None = None
    config_file: str | None = Field(None, description="null: fornax.yml (caicloud.yml is also read)")
    deploy_targets: list[dict[str, str]] | None = None
    secret_names: list[str] | None = None
    public: bool | None = Field(None, description="its badge is readable without a token")
    commit_status: CommitStatusConfig | None = None
    status: RepoStatus = Field(description="what the builder found at the repository")
    status_message: str | None = None
    created_at: str
    updated_at: str


class ServiceList(BaseModel):
    services: list[Service]
    total: int
    limit: int
    offset: int


# -- versions ----------------------------------------------------------------------------------------------


class VersionCreated(BaseModel):
    version_id: str


class Stage(BaseModel):
    name: str = Field(description=f"one of {', '.join(get_args(StageName))} (in this order), or another")
    status: str | None = None
    start: str | None = None
    end: str | None = None
    error: str | None = None


class Version(BaseModel):
    version_id: str
    service_id: str
    user_id: str
    name: str
    status: VersionStatus
    description: str | None = None
    commit: str | None = None
    branch: str | None = None
    trigger: Literal["api", "webhook"] | None = None
    operations: list[str] | None = None
    queued_reason: str | None = None
    image: str | None = None
    image_id: str | None = None
    digest: str | None = None
    host: str | None = None
    tag: str | None = None
    error: str | None = None
    delivery_id: str | None = None
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    stages: list[Stage] = Field(description="in pipeline order")


class VersionList(BaseModel):
    versions: list[Version]
    total: int
    limit: int
    offset: int


class Cancelling(BaseModel):
    version_id: str
    status: Literal["cancelling"]


class LogLine(BaseModel):
    seq: int | None = None
    stage: str | None = None
    stream: str | None = None
    text: str | None = None
    ts: float | None = None


class LogPage(BaseModel):
    version_id: str
    status: str | None = None
    lines: list[LogLine]
    next_since: int = Field(description="the `since` of the next page")
    has_more: bool
    total: int


class LogEnd(BaseModel):
    """The last NDJSON line of a followed log."""

    final: Literal[True]
    status: str | None = None
    version_id: str


# -- deploys ----------------------------------------------------------------------------------------------


class DeploymentAccepted(BaseModel):
    deployment_id: str


class Unpinned(BaseModel):
    target: str
    pinned: Literal[False]


class Deployment(BaseModel):
    deployment_id: str
    version_name: str | None = None
    kind: str | None = None
    status: str | None = None
    target: str | None = None
    namespace: str | None = None
    application: str | None = None
    version_id: str | None = None
    to_version_id: str | None = None
    image: str | None = None
    digest: str | None = None
    actor: str | None = None
    requested_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration: float | None = None
    reason: str | None = None
    detail: str | None = None


class TargetState(BaseModel):
    target: str | None = None
    pinned: bool | None = None
    pin_reason: str | None = None
    current_deployment_id: str | None = None
    current_version_id: str | None = None
    current_digest: str | None = None


class DeploymentList(BaseModel):
    deployments: list[Deployment]
    targets: list[TargetState] = Field(description="each target's pin state")
    total: int
    limit: int
    offset: int


# -- webhooks, account, operations, OAuth ---------------------------------------------------------------------


class WebhookAccepted(BaseModel):
    delivery_id: str
    services: int = Field(description="how many services the push was recorded for")


class WebhookIgnored(BaseModel):
    ignored: str = Field(description="why (ping, another event, a ref that is neither a branch nor a tag)")


class Me(BaseModel):
    user_id: str


class TokenRotated(BaseModel):
    user_id: str
    token: str


class TokenRevoked(BaseModel):
    user_id: str
    revoked: Literal[True]


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready", "unavailable"]
    error: ErrorDetail | None = None


class AuthorizeUrl(BaseModel):
    authorize_url: str
    provider: str
    expires_in: int = Field(description="seconds the state stays valid")


class OAuthConnected(BaseModel):
    user_id: str
    provider: str
    connected: Literal[True]


class ProviderRepository(BaseModel):
    name: str | None = None
    full_name: str | None = None
    clone_url: str | None = None
    private: bool | None = None
    default_branch: str | None = None


class ProviderRepositories(BaseModel):
    provider: str
    items: list[ProviderRepository]
    total: int


class OAuthDisconnected(BaseModel):
    provider: str
    disconnected: bool
