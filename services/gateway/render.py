"""Turning read-model documents into API JSON: allow-listed fields only (never a secret), ISO dates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request

from shared.query import MAX_POSITION, parse_int
from shared.repo_url import redact_credentials

from .errors import ApiError

STAGE_ORDER = ("clone", "integration", "pre_build", "build", "push", "tag", "post_build", "deploy")

_SERVICE_FIELDS = (
    "name",
    "description",
    "user_id",
    "repository",
    "config_file",
    "deploy_targets",
    "secret_names",
    "public",
    "commit_status",
    "status",
    "status_message",
    "created_at",
    "updated_at",
)
_REPO_FIELDS = ("url", "vcs", "username", "oauth")
_VERSION_FIELDS = (
    "service_id",
    "user_id",
    "name",
    "description",
    "commit",
    "branch",
    "trigger",
    "operations",
    "status",
    "queued_reason",
    "image",
    "image_id",
    "digest",
    "host",
    "tag",
    "error",
    "delivery_id",
    "created_at",
    "started_at",
    "finished_at",
)


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def service_json(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"service_id": doc["_id"]}
    for key in _SERVICE_FIELDS:
        if key in doc:
            out[key] = doc[key]
    repo = doc.get("repository")
    if isinstance(repo, dict):
        out["repository"] = {k: repo.get(k) for k in _REPO_FIELDS if k in repo}
        if isinstance(out["repository"].get("url"), str):  # stored before credentials were refused
            out["repository"]["url"] = redact_credentials(out["repository"]["url"])
    return jsonable(out)  # type: ignore[no-any-return]


def stages_list(stages: Any) -> list[dict[str, Any]]:
    """The stages dict of a version as a list in pipeline order (unknown stage names last)."""
    if not isinstance(stages, dict):
        return []
    names = [s for s in STAGE_ORDER if s in stages] + sorted(s for s in stages if s not in STAGE_ORDER)
    out = []
    for name in names:
        st = stages[name] if isinstance(stages[name], dict) else {}
        out.append(
            {
                "name": name,
                "status": st.get("status"),
                "start": st.get("start"),
                "end": st.get("end"),
                "error": st.get("error"),
            }
        )
    return out


def version_json(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"version_id": doc["_id"]}
    for key in _VERSION_FIELDS:
        if key in doc:
            out[key] = doc[key]
    out["stages"] = stages_list(doc.get("stages"))
    return jsonable(out)  # type: ignore[no-any-return]


def max_page(maximum: int) -> int:
    """The last page number accepted whatever the page size: its offset stays within MAX_POSITION."""
    return MAX_POSITION // maximum


def paging(request: Request, default: int = 20, maximum: int = 100) -> tuple[int, int]:
    """(limit, offset) from `?limit=&offset=` or `?page=&per_page=` (page counts from 1); 422 when bad."""
    q = request.query_params

    def number(name: str, low: int, high: int = MAX_POSITION) -> int | None:
        raw = q.get(name)
        if raw is None or raw == "":
            return None
        try:
            return parse_int(raw, low, high)
        except ValueError as exc:
            raise ApiError(422, "validation_error", f"{name}: {exc}", name) from None

    per_page = number("per_page", 1, maximum)
    page = number("page", 1, max_page(maximum))
    limit = number("limit", 1, maximum) or per_page or default
    offset = number("offset", 0)
    if offset is None:
        offset = (page - 1) * limit if page else 0
        if offset > MAX_POSITION:
            raise ApiError(422, "validation_error", f"page: must be at most {MAX_POSITION // limit}", "page")
    return limit, offset
