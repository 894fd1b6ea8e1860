"""The gateway's route table for its OpenAPI document: parameters, bodies and answers of every route.

Request bodies are the very models the routes validate with, and every bound a route checks by hand
(paging, log positions, header presence) is declared here from the constants the route uses, so the
document and the server agree (tests/integration/test_api_contract.py fuzzes one against the other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared.query import MAX_POSITION

from . import schemas as m
from .render import max_page
from .routes.logs import DEFAULT_LIMIT as LOG_DEFAULT_LIMIT
from .routes.logs import MAX_LIMIT as LOG_MAX_LIMIT

REF = "#/components/schemas/{model}"
Schema = dict[str, Any]
Body = type[BaseModel] | Schema


# -- the route table's vocabulary --------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    location: str  # path, query or header
    schema: Schema
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Resp:
    description: str
    body: Body | None = None
    media: str = "application/json"
    headers: tuple[tuple[str, str, Schema], ...] = ()
    more: tuple[tuple[str, Body], ...] = ()  # other media types of the same answer


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    summary: str
    tag: str
    responses: dict[int, Resp]
    params: tuple[Param, ...] = ()
    body: Body | None = None
    body_required: bool = True
    auth: str = "bearer"  # bearer, none, or optional
    description: str | None = None


def path_param(name: str, description: str, schema: Schema | None = None) -> Param:
    return Param(name, "path", schema or {"type": "string"}, description, required=True)


def integer(low: int, high: int, description: str, default: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "minimum": low, "maximum": high, "description": description}
    if default is not None:
        schema["default"] = default
    return schema


def query(name: str, schema: Schema, required: bool = False) -> Param:
    return Param(name, "query", schema, schema.get("description", ""), required)


def paging(default: int, maximum: int) -> tuple[Param, ...]:
    """The parameters of `render.paging(request, default, maximum)`."""
    return (
        query("limit", integer(1, maximum, f"page size (default {default})", default)),
        query("offset", integer(0, MAX_POSITION, "items to skip (default 0)", 0)),
        query("page", integer(1, max_page(maximum), "1-based page number; alternative to offset")),
        query("per_page", integer(1, maximum, "alternative name of limit")),
    )


USER = path_param("user_id", "the user id (must be the token's user)")
SERVICE = path_param("service_id", "service id")
VERSION = path_param("version_id", "version id")
PROVIDER = path_param("code_repository", "the code host", {"type": "string", "enum": ["github", "gitlab"]})

_ERRORS = {
    400: "malformed request (invalid JSON body, header or parameter)",
    401: "missing or invalid bearer token",
    403: "the token may not act for this user",
    404: "not found (someone else's resource looks the same)",
    409: "conflicts with the current state",
    413: "the body, or the event it makes, is too large",
    422: "a body field or parameter is invalid (`field` names it)",
    503: "MongoDB or the event broker is unavailable: nothing was done, retry later",
}


def errors(*codes: int, **why: str) -> dict[int, Resp]:
    """Error answers; `why` (e.g. e422="...") says more than the common description."""
    return {c: Resp(why.get(f"e{c}", _ERRORS[c]), m.Error) for c in codes}


LOCATION = ("Location", "where the new resource is read", {"type": "string"})
RETRY_AFTER = ("Retry-After", "seconds to wait before reading it (not yet readable)", {"type": "integer"})
CONSISTENT = (
    "Immediately consistent: answers once the read model shows what it created, so a read right after finds it."
)


def created(body: type[BaseModel], *, readable: bool) -> dict[int, Resp]:
    """The answers of a create that waits for its read model (consistency.accepted): 201 + Location when it
    is readable in time (`readable`; a deploy, still going on, answers 202 + Location), else 202 +
    Location + Retry-After."""
    if readable:
        return {
            201: Resp("created and readable at once (GET, webhooks, log subscriptions)", body, headers=(LOCATION,)),
            202: Resp("accepted, not yet readable (read model behind): retry the Location after Retry-After",
                      body, headers=(LOCATION, RETRY_AFTER)),
        }
    return {202: Resp("accepted; listed at Location at once, or (read model behind) after Retry-After if that "
                      "header is set", body, headers=(LOCATION, RETRY_AFTER))}


# A sequence of JSON values, one a line, described as the array of its lines (OpenAPI 3.1 has no
# keyword for the schema of each item of a streamed media type).
NDJSON_LOG: Schema = {
    "type": "array",
    "description": "one item per line: the log lines, then a LogEnd",
    "items": {"anyOf": [{"$ref": REF.format(model="LogLine")}, {"$ref": REF.format(model="LogEnd")}]},
}


# -- the routes ------------------------------------------------------------------------------------------

P = "/api/v1/{user_id}"
SETTINGS_422 = "invalid, or refused by this server's settings (repository URL policy, configured targets, " \
               "namespaces, OAuth connections)"


def _operations() -> list[Op]:
    svc_paging = paging(100, 500)
    paged = paging(20, 100)
    return [
        Op("post", f"{P}/services", "Create a service (201 once readable; ServiceCreated emitted)", "services",
           {**created(m.ServiceCreated, readable=True), **errors(400, 401, 403, 409, 413, 422, 503, e422=SETTINGS_422)},
           (USER,), m.ServiceIn, description=CONSISTENT),
        Op("get", f"{P}/services", "List the user's services (oldest first)", "services",
           {200: Resp("a page of services", m.ServiceList), **errors(401, 403, 422, 503)}, (USER, *svc_paging)),
        Op("get", f"{P}/services/{{service_id}}", "Read a service", "services",
           {200: Resp("the service", m.Service), **errors(401, 403, 404, 503)}, (USER, SERVICE)),
        Op("put", f"{P}/services/{{service_id}}", "Update a service (202; ServiceUpdated emitted)", "services",
           {202: Resp("accepted", m.ServiceAccepted),
            **errors(400, 401, 403, 404, 413, 422, 503, e422=SETTINGS_422)},
           (USER, SERVICE), m.ServicePatch),
        Op("delete", f"{P}/services/{{service_id}}", "Delete a service (202; ServiceDeleted emitted; frees the name)",
           "services", {202: Resp("accepted", m.ServiceAccepted), **errors(401, 403, 404, 503)}, (USER, SERVICE)),
        Op("get", f"{P}/services/{{service_id}}/versions", "A service's versions, newest first, paginated",
           "versions", {200: Resp("a page of versions", m.VersionList), **errors(401, 403, 404, 422, 503)},
           (USER, SERVICE, *paged)),
        Op("post", f"{P}/versions", "Create a version (201 once readable; VersionRequested emitted)", "versions",
           {**created(m.VersionCreated, readable=True), **errors(400, 401, 403, 404, 409, 413, 422, 503)},
           (USER,), m.VersionIn, description=CONSISTENT),
        Op("get", f"{P}/versions/{{version_id}}", "Read a version with its stages", "versions",
           {200: Resp("the version", m.Version), **errors(401, 403, 404, 503)}, (USER, VERSION)),
        Op("post", f"{P}/versions/{{version_id}}/cancel", "Cancel a pending, queued or running version",
           "versions", {202: Resp("cancellation requested", m.Cancelling), **errors(401, 403, 404, 409, 503)},
           (USER, VERSION)),
        Op("get", f"{P}/versions/{{version_id}}/logs",
           "The version's log: one page as JSON, or with follow=true NDJSON lines until the version ends",
           "logs",
           {200: Resp("a page of lines (JSON); with follow=true one JSON object per line (NDJSON): the lines, "
                      "then a LogEnd", m.LogPage, more=(("application/x-ndjson", NDJSON_LOG),)),
            **errors(401, 403, 404, 422, 503)},
           (USER, VERSION,
            query("since", integer(0, MAX_POSITION, "only lines with seq greater than this", 0)),
            query("limit", integer(1, LOG_MAX_LIMIT, "at most this many lines (not with follow)", LOG_DEFAULT_LIMIT)),
            query("follow", {"type": "boolean", "default": False,
                             "description": "stream new lines until the version ends"}))),
        Op("post", f"{P}/services/{{service_id}}/deploy", "Deploy a successful version to a target", "deploys",
           {**created(m.DeploymentAccepted, readable=False),
            **errors(400, 401, 403, 404, 409, 413, 422, 503, e422=SETTINGS_422)},
           (USER, SERVICE), m.DeployIn, description=CONSISTENT),
        Op("post", f"{P}/services/{{service_id}}/rollback",
           "Roll back: redeploy an earlier version's exact image digest", "deploys",
           {**created(m.DeploymentAccepted, readable=False),
            **errors(400, 401, 403, 404, 409, 413, 422, 503, e422=SETTINGS_422)},
           (USER, SERVICE), m.RollbackIn, description=CONSISTENT),
        Op("post", f"{P}/services/{{service_id}}/unpin",
           "Unpin a target (a rollback pins it against automatic deploys)", "deploys",
           {202: Resp("accepted", m.Unpinned), **errors(400, 401, 403, 404, 413, 422, 503, e422=SETTINGS_422)},
           (USER, SERVICE), m.UnpinIn),
        Op("get", f"{P}/services/{{service_id}}/deployments",
           "Deploy history, newest first, paginated, with each target's pin state", "deploys",
           {200: Resp("deployments", m.DeploymentList), **errors(401, 403, 404, 422, 503)}, (USER, SERVICE, *paged)),
        *[_webhook(provider) for provider in WEBHOOK_HEADERS],
        Op("get", "/healthz", "Liveness: the process answers", "operations", {200: Resp("alive", m.Health)},
           auth="none"),
        Op("get", "/readyz", "Readiness: MongoDB and the event broker reachable", "operations",
           {200: Resp("ready", m.Ready), 503: Resp("not ready: `error` says what is missing", m.Ready)},
           auth="none"),
        Op("get", "/openapi.json", "This document", "operations",
           {200: Resp("the OpenAPI 3.1 document", {"type": "object"})}, auth="none"),
        Op("get", "/apidocs", "Human-readable API documentation (HTML)", "operations",
           {200: Resp("HTML page", None, media="text/html")}, auth="none"),
        Op("get", "/api/v1/me", "Who the token belongs to", "account",
           {200: Resp("the user", m.Me), **errors(401, 503)}),
        Op("post", f"{P}/token/rotate", "Rotate the caller's token (the old one stops working at once)", "account",
           {200: Resp("the new token", m.TokenRotated), **errors(401, 403, 404, 503)}, (USER,)),
        Op("post", f"{P}/token/revoke",
           "Revoke the caller's token (an admin issues a new one: fornax user token NAME)", "account",
           {200: Resp("revoked", m.TokenRevoked), **errors(401, 403, 503)}, (USER,)),
        Op("get", "/badges/{user_id}/{service}.svg",
           "Status badge of a service's latest version (SVG; a public service's needs no token)", "badges",
           {200: Resp("badge: passing, failing, running, cancelled or none", None, media="image/svg+xml",
                      headers=(("ETag", "the badge's version", {"type": "string"}),)),
            304: Resp("unchanged since the ETag given in If-None-Match", None),
            **errors(400, 404, 503, e404="no such public service (a private one's badge needs its owner's token)")},
           (path_param("user_id", "the owner's user id"), path_param("service", "service name"),
            query("branch", {"type": "string", "minLength": 1, "maxLength": 255,
                             "description": "only versions built from this branch"})),
           auth="optional"),
    ]


WEBHOOK_HEADERS = {
    "github": (
        ("X-GitHub-Event", "push (ping and others are ignored)", True),
        ("X-Hub-Signature-256", "sha256=HMAC-SHA256(webhook secret, raw body); a push without it is refused",
         False),
        ("X-GitHub-Delivery", "delivery id; a repeated delivery makes one version (default: a hash of the body)",
         False),
    ),
    "gitlab": (
        ("X-Gitlab-Event", "Push Hook or Tag Push Hook (others are ignored)", True),
        ("X-Gitlab-Token", "the service's webhook secret; a push without it is refused", False),
        ("X-Gitlab-Event-UUID", "delivery id; a repeated delivery makes one version (default: a hash of the body)",
         False),
    ),
}


def _webhook(provider: str) -> Op:
    headers = tuple(
        Param(name, "header", {"type": "string", "pattern": r"\S"} if required else {"type": "string"}, desc,
              required)
        for name, desc, required in WEBHOOK_HEADERS[provider]
    )
    return Op(
        "post", f"/webhooks/{provider}", f"{provider.capitalize()} push webhook: one PushReceived per matching service",
        "webhooks",
        {202: Resp("accepted after the broker acknowledged", m.WebhookAccepted),
         200: Resp("ignored event (ping, non-push, a ref neither branch nor tag)", m.WebhookIgnored),
         **errors(400, 401, 404, 413, 503, e400="missing event header, or a push whose body is not a push payload",
                  e401="the signature or token does not match the service's webhook secret",
                  e404="no service is registered for this repository")},
        headers,
        {"description": "the provider's event payload (read only for a push: a JSON object, or a form with "
                        "`payload`)"},
        body_required=False,
        auth="none",
    )


def _oauth_operations() -> list[Op]:
    """OAuth for private repositories: the seed's paths and their /api/v1 twins."""
    ops = [
        Op("get", "/{user_id}/services/{code_repository}/requesttoken",
           "Start connecting a code host: the provider's authorize URL, with a single-use `state` bound to the "
           "user (expires after settings oauth_state_seconds)", "oauth",
           {200: Resp("where to send the user", m.AuthorizeUrl),
            **errors(401, 403, 404, 503, e404="unknown provider, or OAuth for it not configured here")},
           (USER, PROVIDER)),
        Op("get", "/services/{code_repository}/authcallback",
           "The provider redirects here with `code` and `state`; the token is stored encrypted for the state's "
           "user (no bearer: the state names the user)", "oauth",
           {200: Resp("connected", m.OAuthConnected),
            **errors(400, 404, 503, e404="unknown provider, or OAuth for it not configured here")},
           (PROVIDER, query("code", {"type": "string", "minLength": 1, "description": "authorization code"}, True),
            query("state", {"type": "string", "minLength": 1, "description": "the state from requesttoken"}, True),
            query("error", {"type": "string", "description": "the provider's refusal, if it refused"})),
           auth="none"),
        Op("get", "/{user_id}/services/{code_repository}/listrepo",
           "The user's repositories at the provider (private ones too), with clone URLs", "oauth",
           {200: Resp("the repositories", m.ProviderRepositories),
            **errors(401, 403, 404, 409, 503, e409="not connected to this provider, or its token was withdrawn")},
           (USER, PROVIDER)),
        *[Op(method, "/{user_id}/services/{code_repository}/logout", "Disconnect: delete the stored token", "oauth",
             {200: Resp("disconnected (false: there was no token)", m.OAuthDisconnected),
              **errors(401, 403, 404, 503)}, (USER, PROVIDER))
          for method in ("get", "post", "delete")],
    ]
    return [*ops, *[Op(**{**op.__dict__, "path": "/api/v1" + op.path}) for op in ops]]


def _compat_operations(ops: list[Op]) -> list[Op]:
    """The Fornax 2016 paths (no /api/v1 prefix): the same operations, tagged `compatibility`."""
    from .routes.compat import PREFIX, SEED_PATHS

    twins = {PREFIX + seed: seed for seed in SEED_PATHS}
    return [
        Op(**{**op.__dict__, "path": twins[op.path], "tag": "compatibility",
              "summary": f"{op.summary} — compatibility path of {op.path}"})
        for op in ops if op.path in twins
    ]


def operations() -> list[Op]:
    ops = _operations()
    return [*ops, *_compat_operations(ops), *_oauth_operations()]
