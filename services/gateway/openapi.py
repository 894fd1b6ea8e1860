"""The gateway's OpenAPI 3 document, written by hand (it is the API contract, not a by-product)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

_ERR = {"$ref": "#/components/responses/Error"}


def _json(schema: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return {"content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: tuple[int, str, dict[str, Any] | str],
    *errors: int,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    auth: bool = True,
    tag: str = "",
) -> dict[str, Any]:
    status, desc, schema = ok
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag] if tag else [],
        "responses": {str(status): {"description": desc, **_json(schema)}, **{str(e): _ERR for e in errors}},
    }
    if body:
        op["requestBody"] = {"required": True, **_json(body)}
    if params:
        op["parameters"] = params
    if not auth:
        op["security"] = []
    return op


def _path(name: str, desc: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": desc, "schema": {"type": "string"}}


def _query(name: str, desc: str, type_: str = "integer") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": desc, "schema": {"type": type_}}


USER = _path("user_id", "the user id (must be the token's user)")
SERVICE = _path("service_id", "service id")
VERSION = _path("version_id", "version id")
PAGING = [
    _query("limit", "page size (1-100, default 20)"),
    _query("offset", "items to skip (default 0)"),
    _query("page", "1-based page number; alternative to offset"),
    _query("per_page", "alternative name of limit"),
]
ACCEPTED = {"type": "object", "properties": {"accepted": {"type": "boolean"}}}
_LOCATION = {"description": "where the new resource is read", "schema": {"type": "string"}}
_RETRY_AFTER = {"description": "seconds to wait before reading it (not yet readable)", "schema": {"type": "integer"}}


def _read_your_writes(op: dict[str, Any], created: bool) -> dict[str, Any]:
    """Mark a create that answers once its read model shows it (settings.read_your_writes_wait, default
    2 s): 201 + Location then (`created`; a deploy, still going on, answers 202 + Location), or past the
    wait 202 + Location + Retry-After."""
    responses = op["responses"]
    ok = responses.pop("202")
    schema = ok["content"]["application/json"]["schema"]
    pending = {
        "description": "accepted, not yet readable (read model behind): retry the Location after Retry-After",
        "headers": {"Location": _LOCATION, "Retry-After": _RETRY_AFTER},
        **_json(schema),
    }
    if created:
        responses["201"] = {
            "description": "created and readable at once (GET, webhooks, log subscriptions)",
            "headers": {"Location": _LOCATION},
            **_json(schema),
        }
    else:
        pending["description"] = (
            "accepted; listed at Location at once, or (read model behind) after Retry-After if that header is set"
        )
    responses["202"] = pending
    op["responses"] = dict(sorted(responses.items()))
    op["description"] = (
        "Immediately consistent: answers once the read model shows what it created, so a read right after finds it."
    )
    return op

_SECRETS = {
    "type": "object",
    "maxProperties": 100,
    "additionalProperties": {"type": "string", "maxLength": 65536},
    "writeOnly": True,
    "description": "values available to builds, masked in logs, stored encrypted (each at most 64 KiB)",
}
_DEPLOY_TARGETS = {
    "type": "array",
    "maxItems": 50,
    "items": {
        "type": "object",
        "maxProperties": 20,
        "additionalProperties": {"type": "string", "maxLength": 2000},
    },
    "description": "at most 64 KiB as JSON",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string", "description": "the offending body field or parameter"},
                },
            }
        },
    },
    "Repository": {
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string"},
            "vcs": {"type": "string", "description": "git or svn", "default": "git"},
            "username": {"type": "string"},
            "password": {"type": "string", "writeOnly": True},
            "token": {"type": "string", "writeOnly": True},
        },
    },
    "ServiceCreate": {
        "type": "object",
        "required": ["name", "repository"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"},
            "description": {"type": "string"},
            "repository": {"$ref": "#/components/schemas/Repository"},
            "config_file": {
                "type": "string",
                "description": "default fornax.yml (caicloud.yml is also read)",
            },
            "webhook_secret": {"type": "string", "writeOnly": True, "description": "generated when omitted"},
            "secrets": _SECRETS,
            "deploy_targets": _DEPLOY_TARGETS,
        },
    },
    "ServiceUpdate": {
        "type": "object",
        "description": "any subset of ServiceCreate except name",
        "properties": {
            "description": {"type": "string"},
            "repository": {"$ref": "#/components/schemas/Repository"},
            "config_file": {"type": "string"},
            "webhook_secret": {"type": "string", "writeOnly": True},
            "secrets": _SECRETS,
            "deploy_targets": _DEPLOY_TARGETS,
        },
    },
    "ServiceCreated": {
        "type": "object",
        "properties": {"service_id": {"type": "string"}, "webhook_secret": {"type": "string"}},
    },
    "Service": {
        "type": "object",
        "properties": {
            "service_id": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "repository": {
                "type": "object",
                "properties": {
                    "url": {"type": "string"},
                    "vcs": {"type": "string"},
                    "username": {"type": "string"},
                },
            },
            "config_file": {"type": "string"},
            "deploy_targets": {"type": "array", "items": {"type": "object"}},
            "status": {"type": "string", "enum": ["accepted", "healthy", "missing", "unknownvcs"]},
            "status_message": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "ServiceList": {
        "type": "object",
        "properties": {
            "services": {"type": "array", "items": {"$ref": "#/components/schemas/Service"}},
            "total": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    },
    "VersionCreate": {
        "type": "object",
        "required": ["service_id", "name"],
        "properties": {
            "service_id": {"type": "string"},
            "name": {
                "type": "string",
                "maxLength": 128,
                "description": "a valid git tag name, unique per service",
            },
            "description": {"type": "string"},
            "operations": {
                "type": "array",
                "items": {"type": "string", "enum": ["integration", "publish", "deploy"]},
            },
            "commit": {
                "type": "string",
                "description": "commit sha or svn revision; default: the branch head",
            },
        },
    },
    "VersionCreated": {"type": "object", "properties": {"version_id": {"type": "string"}}},
    "Stage": {
        "type": "object",
        "properties": {
            "name": {
                "type": "string",
                "enum": ["clone", "integration", "pre_build", "build", "push", "tag", "post_build", "deploy"],
            },
            "status": {"type": "string"},
            "start": {"type": "string"},
            "end": {"type": "string"},
            "error": {"type": "string"},
        },
    },
    "Version": {
        "type": "object",
        "properties": {
            "version_id": {"type": "string"},
            "service_id": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "commit": {"type": "string"},
            "branch": {"type": "string"},
            "trigger": {"type": "string", "enum": ["api", "webhook"]},
            "operations": {"type": "array", "items": {"type": "string"}},
            "status": {
                "type": "string",
                "enum": ["pending", "queued", "running", "success", "failed", "cancelled"],
            },
            "stages": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Stage"},
                "description": "in pipeline order",
            },
            "image": {"type": "string"},
            "digest": {"type": "string"},
            "error": {"type": "string"},
            "created_at": {"type": "string"},
            "started_at": {"type": "string"},
            "finished_at": {"type": "string"},
        },
    },
    "VersionList": {
        "type": "object",
        "properties": {
            "versions": {"type": "array", "items": {"$ref": "#/components/schemas/Version"}},
            "total": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    },
    "DeployRequest": {
        "type": "object",
        "required": ["version_id"],
        "properties": {
            "version_id": {"type": "string"},
            "target": {"type": "string"},
            "namespace": {"type": "string"},
            "application": {"type": "string"},
        },
    },
    "RollbackRequest": {
        "type": "object",
        "properties": {
            "to_version_id": {"type": "string", "description": "default: the previous successful deploy"},
            "target": {"type": "string"},
        },
    },
    "Deployment": {
        "type": "object",
        "properties": {
            "deployment_id": {"type": "string"},
            "version_id": {"type": "string"},
            "target": {"type": "string"},
            "image": {"type": "string"},
            "digest": {"type": "string"},
            "kind": {"type": "string"},
            "status": {"type": "string"},
            "reason": {"type": "string"},
            "requested_at": {"type": "string"},
            "finished_at": {"type": "string"},
        },
    },
    "UnpinRequest": {"type": "object", "required": ["target"], "properties": {"target": {"type": "string"}}},
    "DeploymentList": {
        "type": "object",
        "properties": {
            "deployments": {"type": "array", "items": {"$ref": "#/components/schemas/Deployment"}},
            "targets": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "target": {"type": "string"},
                        "pinned": {"type": "boolean"},
                        "pin_reason": {"type": "string"},
                        "current_deployment_id": {"type": "string"},
                        "current_version_id": {"type": "string"},
                        "current_digest": {"type": "string"},
                    },
                },
            },
            "total": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    },
    "LogLine": {
        "type": "object",
        "properties": {
            "seq": {"type": "integer"},
            "stage": {"type": "string"},
            "stream": {"type": "string"},
            "text": {"type": "string"},
            "ts": {"type": "number"},
        },
    },
}

WEBHOOK_HEADERS = {
    "github": [
        ("X-GitHub-Event", "push (ping and others are ignored)"),
        ("X-Hub-Signature-256", "sha256=HMAC-SHA256(webhook secret, raw body)"),
        ("X-GitHub-Delivery", "delivery id; a repeated delivery makes one version"),
    ],
    "gitlab": [
        ("X-Gitlab-Event", "Push Hook or Tag Push Hook (others are ignored)"),
        ("X-Gitlab-Token", "the service's webhook secret"),
        ("X-Gitlab-Event-UUID", "delivery id; a repeated delivery makes one version"),
    ],
}


def _webhook(provider: str) -> dict[str, Any]:
    op = _op(
        f"{provider.capitalize()} push webhook: one PushReceived per matching service",
        (
            202,
            "accepted after the broker acknowledged",
            {
                "type": "object",
                "properties": {"delivery_id": {"type": "string"}, "services": {"type": "integer"}},
            },
        ),
        400,
        401,
        404,
        413,
        503,
        auth=False,
        tag="webhooks",
    )
    op["responses"]["200"] = {
        "description": "ignored event (ping, non-push)",
        **_json({"type": "object", "properties": {"ignored": {"type": "string"}}}),
    }
    op["parameters"] = [
        {"name": h, "in": "header", "required": False, "description": d, "schema": {"type": "string"}}
        for h, d in WEBHOOK_HEADERS[provider]
    ]
    op["requestBody"] = {
        "required": True,
        **_json({"type": "object", "description": "the provider's push payload"}),
    }
    return op


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of every gateway route."""
    p = "/api/v1/{user_id}"
    paths: dict[str, Any] = {
        f"{p}/services": {
            "post": _read_your_writes(
                _op(
                    "Create a service (201 once readable; ServiceCreated emitted)",
                    (202, "accepted", "ServiceCreated"),
                    400,
                    401,
                    403,
                    409,
                    413,
                    422,
                    503,
                    body="ServiceCreate",
                    params=[USER],
                    tag="services",
                ),
                created=True,
            ),
            "get": _op(
                "List the user's services",
                (200, "the services", "ServiceList"),
                401,
                403,
                503,
                params=[USER, _query("limit", "page size"), _query("offset", "items to skip")],
                tag="services",
            ),
        },
        f"{p}/services/{{service_id}}": {
            "get": _op(
                "Read a service",
                (200, "the service", "Service"),
                401,
                403,
                404,
                503,
                params=[USER, SERVICE],
                tag="services",
            ),
            "put": _op(
                "Update a service (202; ServiceUpdated emitted)",
                (202, "accepted", ACCEPTED),
                400,
                401,
                403,
                404,
                413,
                422,
                503,
                body="ServiceUpdate",
                params=[USER, SERVICE],
                tag="services",
            ),
            "delete": _op(
                "Delete a service (202; ServiceDeleted emitted; frees the name)",
                (202, "accepted", ACCEPTED),
                401,
                403,
                404,
                503,
                params=[USER, SERVICE],
                tag="services",
            ),
        },
        f"{p}/services/{{service_id}}/versions": {
            "get": _op(
                "A service's versions, newest first, paginated (with total)",
                (200, "a page of versions", "VersionList"),
                401,
                403,
                404,
                422,
                503,
                params=[USER, SERVICE, *PAGING],
                tag="versions",
            ),
        },
        f"{p}/versions": {
            "post": _read_your_writes(
                _op(
                    "Create a version (201 once readable; VersionRequested emitted)",
                    (202, "accepted", "VersionCreated"),
                    400,
                    401,
                    403,
                    404,
                    409,
                    413,
                    422,
                    503,
                    body="VersionCreate",
                    params=[USER],
                    tag="versions",
                ),
                created=True,
            ),
        },
        f"{p}/versions/{{version_id}}": {
            "get": _op(
                "Read a version with its stages",
                (200, "the version", "Version"),
                401,
                403,
                404,
                503,
                params=[USER, VERSION],
                tag="versions",
            ),
        },
        f"{p}/versions/{{version_id}}/cancel": {
            "post": _op(
                "Cancel a pending, queued or running version",
                (202, "cancellation requested", ACCEPTED),
                401,
                403,
                404,
                409,
                503,
                params=[USER, VERSION],
                tag="versions",
            ),
        },
        f"{p}/versions/{{version_id}}/logs": {
            "get": _op(
                "The version's log as NDJSON lines; ?follow=true streams until the version ends",
                (200, "log lines (application/x-ndjson)", {"$ref": "#/components/schemas/LogLine"}),
                401,
                403,
                404,
                422,
                503,
                params=[
                    USER,
                    VERSION,
                    _query("since", "only lines with seq greater than this (default 0)"),
                    _query("limit", "at most this many lines (1-10000, default 1000; not with follow)"),
                    _query("follow", "stream new lines until the version ends", "boolean"),
                ],
                tag="logs",
            ),
        },
        f"{p}/services/{{service_id}}/deploy": {
            "post": _read_your_writes(
                _op(
                    "Deploy a version to a target",
                    (202, "accepted", {"type": "object", "properties": {"deployment_id": {"type": "string"}}}),
                    400,
                    401,
                    403,
                    404,
                    409,
                    422,
                    503,
                    body="DeployRequest",
                    params=[USER, SERVICE],
                    tag="deploys",
                ),
                created=False,
            ),
        },
        f"{p}/services/{{service_id}}/rollback": {
            "post": _read_your_writes(
                _op(
                    "Roll back: redeploy an earlier version's exact image digest",
                    (202, "accepted", {"type": "object", "properties": {"deployment_id": {"type": "string"}}}),
                    400,
                    401,
                    403,
                    404,
                    409,
                    422,
                    503,
                    body="RollbackRequest",
                    params=[USER, SERVICE],
                    tag="deploys",
                ),
                created=False,
            ),
        },
        f"{p}/services/{{service_id}}/unpin": {
            "post": _op(
                "Unpin a target (a rollback pins it against automatic deploys)",
                (
                    202,
                    "accepted",
                    {
                        "type": "object",
                        "properties": {"target": {"type": "string"}, "pinned": {"type": "boolean"}},
                    },
                ),
                400,
                401,
                403,
                404,
                422,
                503,
                body="UnpinRequest",
                params=[USER, SERVICE],
                tag="deploys",
            ),
        },
        f"{p}/services/{{service_id}}/deployments": {
            "get": _op(
                "Deploy history, newest first, paginated, with each target's pin state",
                (200, "deployments", "DeploymentList"),
                401,
                403,
                404,
                422,
                503,
                params=[USER, SERVICE, *PAGING],
                tag="deploys",
            ),
        },
        "/webhooks/github": {"post": _webhook("github")},
        "/webhooks/gitlab": {"post": _webhook("gitlab")},
        "/healthz": {
            "get": _op(
                "Liveness: the process answers", (200, "alive", ACCEPTED), auth=False, tag="operations"
            )
        },
        "/readyz": {
            "get": _op(
                "Readiness: MongoDB and the event broker reachable",
                (200, "ready", ACCEPTED),
                503,
                auth=False,
                tag="operations",
            )
        },
        "/openapi.json": {
            "get": _op(
                "This document", (200, "OpenAPI 3 document", {"type": "object"}), auth=False, tag="operations"
            )
        },
        "/apidocs": {
            "get": {
                "summary": "Human-readable API documentation (HTML)",
                "tags": ["operations"],
                "security": [],
                "responses": {"200": {"description": "HTML page", "content": {"text/html": {}}}},
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Fornax gateway",
            "version": "1.0.0",
            "description": "REST API and webhooks of Fornax, the event-sourced CI/CD system. Writes are "
            "accepted once the event is durably on the broker. Creates (service, version, deploy, rollback) "
            "are immediately consistent: they answer once the read model shows the new resource (201 + "
            "Location; a deploy 202 + Location), so a GET, a webhook or a log subscription right after "
            "finds it; past a bounded wait (2 s by default) they answer 202 + Location + Retry-After. "
            "Updates, deletes, cancels and unpins answer 202 and read models follow shortly after. Errors "
            'are {"error": {"code", "message", "field"?}}.',
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [{"name": n} for n in ("services", "versions", "logs", "deploys", "webhooks", "operations")],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "token printed by `fornax user create NAME`",
                }
            },
            "schemas": SCHEMAS,
            "responses": {"Error": {"description": "error", **_json("Error")}},
        },
    }
