"""Gateway pieces without I/O: the OpenAPI document covers every mounted route, the docs page is
self-contained, version names follow git's tag rules, paging parameters, the error shape."""

from __future__ import annotations

import re
import warnings

import pytest
from starlette.applications import Starlette
from starlette.routing import Route

with warnings.catch_warnings():  # starlette warns about its httpx-based TestClient at import
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from services.gateway.apidocs import render
from services.gateway.app import all_routes
from services.gateway.errors import EXCEPTION_HANDLERS, ApiError
from services.gateway.openapi import document
from services.gateway.render import paging, stages_list
from services.gateway.routes.versions import tag_name_problem


def test_every_mounted_route_is_documented() -> None:
    doc = document()
    for route in all_routes():
        assert isinstance(route, Route)
        assert route.path in doc["paths"], route.path
        for method in route.methods or ():
            if method == "HEAD":
                continue
            assert method.lower() in doc["paths"][route.path], (route.path, method)


def test_documented_refs_resolve() -> None:
    doc = document()
    text = repr(doc)
    for ref in set(re.findall(r"#/components/(\w+)/(\w+)", text)):
        assert ref[1] in doc["components"][ref[0]], ref


def test_docs_page_is_self_contained() -> None:
    html = render()
    assert html.startswith("<!doctype html>")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html
    for path in document()["paths"]:
        assert path in html


@pytest.mark.parametrize("name", ["v0.1.0", "release/2026-11", "main-6dcb09b", "1", "a_b+c"])
def test_valid_tag_names(name: str) -> None:
    assert tag_name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a b",
        "a..b",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[",
        "a\\b",
        "/a",
        "a/",
        "a.",
        "a.lock",
        "a//b",
        "@",
        "a@{b",
        ".hidden",
        "x/.y",
        "-x",
        "x" * 129,
        "tab\there",
        "nul\x00",
    ],
)
def test_invalid_tag_names(name: str) -> None:
    assert tag_name_problem(name) is not None


def _paging_app() -> TestClient:
    async def page(request):  # type: ignore[no-untyped-def]
        from starlette.responses import JSONResponse

        limit, offset = paging(request)
        return JSONResponse({"limit": limit, "offset": offset})

    return TestClient(Starlette(routes=[Route("/p", page)], exception_handlers=EXCEPTION_HANDLERS))


@pytest.mark.parametrize(
    ("query", "expected"),
    [("", (20, 0)), ("?limit=5&offset=10", (5, 10)), ("?page=3&per_page=10", (10, 20)), ("?page=1", (20, 0)),
     (f"?page={2**53 // 100}&per_page=100", (100, 2**53 - 100 - 2**53 % 100))],
)
def test_paging(query: str, expected: tuple[int, int]) -> None:
    body = _paging_app().get("/p" + query).json()
    assert (body["limit"], body["offset"]) == expected


@pytest.mark.parametrize("query", ["?limit=0", "?limit=101", "?offset=-1", "?page=0", "?limit=x"])
def test_bad_paging_is_422_naming_the_parameter(query: str) -> None:
    resp = _paging_app().get("/p" + query)
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == query[1:].split("=")[0]


@pytest.mark.parametrize(
    "query",
    [
        f"?offset={2**64}",
        f"?offset={2**63}",
        "?offset=" + "9" * 5000,
        f"?page={2**64}",
        f"?page={2**53}&per_page=100",
        f"?page={2**53 // 100 + 1}",  # past the last page of the largest page size
        "?offset=1e3",
        "?offset=%201",
        "?offset=1_000",
        "?page=-1",
        "?limit=-5",
        "?per_page=1.5",
        "?offset=%D9%A1",  # an Arabic-Indic digit: int() takes it, a query must not
    ],
)
def test_absurd_paging_is_422_naming_the_parameter(query: str) -> None:
    resp = _paging_app().get("/p" + query)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == query[1:].split("=")[0]


def test_error_shape_and_unknown_route() -> None:
    async def boom(request):  # type: ignore[no-untyped-def]
        raise ApiError(409, "conflict_here", "already there", "name")

    client = TestClient(Starlette(routes=[Route("/x", boom)], exception_handlers=EXCEPTION_HANDLERS))
    assert client.get("/x").json() == {
        "error": {"code": "conflict_here", "message": "already there", "field": "name"}
    }
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.post("/x").json()["error"]["code"] == "method_not_allowed"


def test_stages_in_pipeline_order() -> None:
    stages = {
        "push": {"status": "success"},
        "clone": {"status": "success"},
        "build": {"status": "failed", "error": "boom"},
        "custom": {},
    }
    assert [s["name"] for s in stages_list(stages)] == ["clone", "build", "push", "custom"]
    assert stages_list(stages)[1]["error"] == "boom"
    assert stages_list(None) == []
