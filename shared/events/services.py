"""Events on fornax.services. Secrets (passwords, tokens, webhook secrets) are never in events."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_serializer

from .envelope import Event, Payload

RepoStatus = Literal["accepted", "healthy", "missing", "unknownvcs"]


class Repository(Payload):
    url: str
    vcs: str = "git"
    username: str | None = None
    # "github" | "gitlab": clone and tag with the owner's OAuth token for that provider (never in events).
    oauth: str | None = None

    @model_serializer(mode="wrap")
    def _omit_unset_oauth(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("oauth") is None:
            data.pop("oauth", None)
        return data


class CommitStatusConfig(Payload):
    """Where a service's versions report commit status: GitHub or GitLab (or their self-hosted kin)."""

    provider: Literal["github", "gitlab"]
    api_url: str  # https://api.github.com, https://ghe.example.com/api/v3, https://gitlab.example.com/api/v4
    repository: str  # GitHub "owner/repo"; GitLab a project id or "group/project" path
    token_secret: str | None = None  # the name of one of the service's secrets: the API token is never in
    # an event; None: the owner's OAuth token for `provider` (the repository's `oauth` names the same provider)


class ServiceCreatedPayload(Payload):
    user_id: str
    name: str
    description: str = ""
    repository: Repository
    config_file: str | None = None
    deploy_targets: list[dict[str, str]] = Field(default_factory=list)
    secret_names: list[str] = Field(default_factory=list)
    public: bool = False  # badge readable without a token
    commit_status: CommitStatusConfig | None = None


class ServiceCreated(Event):
    TOPIC = "services"
    type: Literal["ServiceCreated"] = "ServiceCreated"
    payload: ServiceCreatedPayload


class RepositoryCheckedPayload(Payload):
    status: RepoStatus
    message: str = ""


class RepositoryChecked(Event):
    TOPIC = "services"
    type: Literal["RepositoryChecked"] = "RepositoryChecked"
    payload: RepositoryCheckedPayload


class ServiceUpdatedPayload(Payload):
    user_id: str
    description: str | None = None
    repository: Repository | None = None
    config_file: str | None = None
    deploy_targets: list[dict[str, str]] | None = None
    secret_names: list[str] | None = None  # set when the service's secrets were replaced (names only)
    public: bool | None = None
    commit_status: CommitStatusConfig | None = None
    clear_commit_status: bool = False


class ServiceUpdated(Event):
    TOPIC = "services"
    type: Literal["ServiceUpdated"] = "ServiceUpdated"
    payload: ServiceUpdatedPayload


class ServiceDeletedPayload(Payload):
    user_id: str


class ServiceDeleted(Event):
    TOPIC = "services"
    type: Literal["ServiceDeleted"] = "ServiceDeleted"
    payload: ServiceDeletedPayload
