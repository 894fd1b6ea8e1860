"""The generated OpenAPI document: valid 3.1, the same bounds as the routes, and 405s that name every method."""

from __future__ import annotations

import warnings

import jsonschema
import pytest
from starlette.applications import Starlette

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from services.gateway.app import all_routes
from services.gateway.body import validate
from services.gateway.errors import EXCEPTION_HANDLERS, ApiError
from services.gateway.openapi import document
from services.gateway.routes.services import ServiceIn
from services.gateway.routes.versions import TAG_NAME_SCHEMA, tag_name_problem

TAG_NAMES = ["v0.1.0", "release/2026-11", "main-6dcb09b", "1", "a_b+c", "a-b", "x/y.z", "@x", "a.lockx", "", "a b",
             "a..b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "/a", "a/", "a.", "a.lock", "a//b", "@", "a@{b",
             ".hidden", "x/.y", "-x", "x" * 128, "x" * 129, "tab\there", "nul\x00", "del\x7f"]


def test_document_is_openapi_3_1_and_every_operation_loads() -> None:
    import schemathesis

    doc = document()
    assert doc["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(doc)
    loaded = [result.ok() for result in schema.get_all_operations()]
    assert len(loaded) == sum(len(item) for item in doc["paths"].values())


def test_the_tag_name_schema_says_what_tag_name_problem_says() -> None:
    checker = jsonschema.Draft202012Validator({"type": "string", **TAG_NAME_SCHEMA})
    for name in TAG_NAMES:
        assert checker.is_valid(name) == (tag_name_problem(name) is None), name


def test_request_bodies_are_the_routes_models_with_their_bounds() -> None:
    schemas = document()["components"]["schemas"]
    service = schemas["ServiceIn"]
    assert service["additionalProperties"] is False
    assert service["properties"]["name"]["pattern"] == "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    assert schemas["DeployIn"]["required"] == ["version_id", "target"]
    logs = document()["paths"]["/api/v1/{user_id}/versions/{version_id}/logs"]["get"]
    params = {p["name"]: p["schema"] for p in logs["parameters"]}
    assert params["limit"]["minimum"] == 1 and params["limit"]["maximum"] == 10000
    assert params["since"]["minimum"] == 0 and params["since"]["maximum"] == 2**53
    assert set(logs["responses"]["200"]["content"]) == {"application/json", "application/x-ndjson"}


def test_nullable_fields_of_answers_are_declared_nullable() -> None:
    schemas = document()["components"]["schemas"]
    nullable = {"type": "null"}
    assert nullable in schemas["Service"]["properties"]["config_file"]["anyOf"]
    assert nullable in schemas["Repository"]["properties"]["username"]["anyOf"]
    for name in ("commit", "branch", "operations"):
        assert nullable in schemas["Version"]["properties"][name]["anyOf"], name


def test_wrong_json_types_are_refused_not_coerced() -> None:
    base = {"name": "svc", "repository": {"url": "https://example.test/x.git"}}
    assert validate(ServiceIn, {**base, "public": True}).public is True
    for field, value in (("public", 0), ("public", "true"), ("description", 5)):
        with pytest.raises(ApiError) as err:
            validate(ServiceIn, {**base, field: value})
        assert err.value.status == 422 and err.value.field == field


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/api/v1/u/services", "GET, HEAD, POST"),
        ("/api/v1/u/services/s1", "DELETE, GET, HEAD, PUT"),
        ("/u/services/s1", "DELETE, GET, HEAD, PUT"),
        ("/api/v1/u/services/github/logout", "DELETE, GET, HEAD, POST"),
        ("/webhooks/github", "POST"),
    ],
)
def test_405_names_every_method_of_the_path(path: str, allow: str) -> None:
    client = TestClient(Starlette(routes=all_routes(), exception_handlers=EXCEPTION_HANDLERS))
    resp = client.request("OPTIONS", path)
    assert resp.status_code == 405 and resp.json()["error"]["code"] == "method_not_allowed"
    assert resp.headers["allow"] == allow
