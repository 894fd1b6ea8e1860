"""Read-your-writes without I/O: the create answers, the pause schedule, and what the API document says."""

from __future__ import annotations

import itertools
import json

from services.gateway.consistency import accepted, pauses
from services.gateway.openapi import document


def test_visible_create_is_201_with_location() -> None:
    resp = accepted({"service_id": "s1"}, "/api/v1/u/services/s1", visible=True)
    assert resp.status_code == 201 and json.loads(resp.body) == {"service_id": "s1"}
    assert resp.headers["location"] == "/api/v1/u/services/s1" and "retry-after" not in resp.headers


def test_not_yet_visible_create_is_202_with_retry_after() -> None:
    resp = accepted({"version_id": "v1"}, "/api/v1/u/versions/v1", visible=False)
    assert resp.status_code == 202
    assert resp.headers["location"] == "/api/v1/u/versions/v1" and resp.headers["retry-after"] == "1"


def test_an_operation_still_running_is_202_even_when_listed() -> None:
    resp = accepted({"deployment_id": "d1"}, "/api/v1/u/services/s1/deployments", visible=True, created=False)
    assert resp.status_code == 202 and "retry-after" not in resp.headers


def test_pauses_grow_then_stay_capped() -> None:
    assert list(itertools.islice(pauses(), 7)) == [0.005, 0.01, 0.02, 0.04, 0.05, 0.05, 0.05]


def test_api_document_says_which_calls_are_immediately_consistent() -> None:
    paths = document()["paths"]
    p = "/api/v1/{user_id}"
    for path, created in (
        (f"{p}/services", True),
        (f"{p}/versions", True),
        (f"{p}/services/{{service_id}}/deploy", False),
        (f"{p}/services/{{service_id}}/rollback", False),
    ):
        op = paths[path]["post"]
        assert "Immediately consistent" in op["description"]
        assert set(op["responses"]["202"]["headers"]) == {"Location", "Retry-After"}
        assert ("201" in op["responses"]) is created
        if created:
            assert set(op["responses"]["201"]["headers"]) == {"Location"}
    # Updates are not: no such promise there.
    assert "description" not in paths[f"{p}/services/{{service_id}}"]["put"]
