"""The gateway's OpenAPI 3.1 document, generated from the route table of `openapi_routes.py` and the
pydantic models of `schemas.py`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from . import schemas as m
from .openapi_routes import REF, Body, Op, Schema, operations


class _Components:
    """components/schemas, filled from the models' JSON Schemas (their $defs included)."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def _add(self, name: str, schema: Schema) -> None:
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are named {name!r}")

    def of(self, body: Body) -> Schema:
        if isinstance(body, dict):
            return body
        schema = body.model_json_schema(ref_template=REF)
        for name, sub in schema.pop("$defs", {}).items():
            self._add(name, sub)
        self._add(body.__name__, schema)
        return {"$ref": REF.format(model=body.__name__)}


def _content(media: str, body: Body | None, components: _Components) -> dict[str, Any]:
    return {media: {"schema": components.of(body)} if body is not None else {}}


def _operation(op: Op, components: _Components) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary, "tags": [op.tag]}
    if op.description:
        out["description"] = op.description
    if op.params:
        out["parameters"] = []
        for p in op.params:
            param = {"name": p.name, "in": p.location, "required": p.required, "schema": p.schema}
            if p.description:
                param["description"] = p.description
            out["parameters"].append(param)
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": _content("application/json", op.body,
                                                                                components)}
    responses: dict[str, Any] = {}
    for status, resp in sorted(op.responses.items()):
        answer: dict[str, Any] = {"description": resp.description}
        if resp.headers:
            answer["headers"] = {name: {"description": desc, "schema": schema} for name, desc, schema in resp.headers}
        if resp.body is not None or resp.media != "application/json":
            answer["content"] = _content(resp.media, resp.body, components)
            for media, body in resp.more:
                answer["content"].update(_content(media, body, components))
        responses[str(status)] = answer
    out["responses"] = responses
    if op.auth == "none":
        out["security"] = []
    elif op.auth == "optional":
        out["security"] = [{}, {"bearer": []}]
    return out


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every gateway route."""
    components = _Components()
    components.of(m.Error)
    components.of(m.LogLine)
    components.of(m.LogEnd)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations():
        paths.setdefault(op.path, {})[op.method] = _operation(op, components)
    return {
        "openapi": "3.1.0",
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
        "tags": [{"name": n} for n in ("services", "versions", "logs", "deploys", "webhooks", "account", "badges",
                                         "operations", "oauth", "compatibility")],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "token printed by `fornax user create NAME`",
                }
            },
            "schemas": dict(sorted(components.schemas.items())),
        },
    }
