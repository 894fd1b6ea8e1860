"""Commit-status provider rules (pure): requests, answers, states."""

from __future__ import annotations

import httpx
import pytest

from services.notifier.providers import (
    classify,
    current_state,
    describe,
    lookup_for,
    provider_state,
    request_for,
)


def test_github_request_shape() -> None:
    req = request_for("github", "https://ghe.example/api/v3/", "acme/shop", "a" * 40, "failed", "t", "fornax/shop",
                      "http://f/#/versions/v", "failed: build")
    assert req.url == f"https://ghe.example/api/v3/repos/acme/shop/statuses/{'a' * 40}"
    assert req.headers["Authorization"] == "Bearer t"
    assert req.json == {"state": "failure", "context": "fornax/shop", "target_url": "http://f/#/versions/v",
                        "description": "failed: build"}


def test_gitlab_request_encodes_the_project_path() -> None:
    req = request_for("gitlab", "https://gl.example/api/v4", "group/sub/app", "b" * 40, "cancelled", "t", "fornax/app",
                      "u", "d")
    assert req.url == f"https://gl.example/api/v4/projects/group%2Fsub%2Fapp/statuses/{'b' * 40}"
    assert req.headers == {"PRIVATE-TOKEN": "t"}
    assert req.json["state"] == "canceled" and req.json["name"] == "fornax/app"
    lookup = lookup_for("gitlab", "https://gl/api/v4", "7", "c", "t")
    assert lookup.url.endswith("/projects/7/repository/commits/c/statuses")


@pytest.mark.parametrize(("provider", "state", "expected"), [
    ("github", "running", "pending"), ("github", "cancelled", "error"), ("github", "failed", "failure"),
    ("gitlab", "running", "running"), ("gitlab", "cancelled", "canceled"), ("gitlab", "failed", "failed"),
])
def test_states_per_provider(provider: str, state: str, expected: str) -> None:
    assert provider_state(provider, state) == expected


def test_description_is_at_most_140_characters() -> None:
    text = describe("failed", "x" * 500)
    assert len(text) == 140 and text.endswith("…")
    assert describe("success") == "built and pushed"


def _h(**kv: str) -> httpx.Headers:
    return httpx.Headers({k.replace("_", "-"): v for k, v in kv.items()})


@pytest.mark.parametrize(("provider", "status", "headers", "body", "kind", "after"), [
    ("github", 201, _h(), "", "done", 0),
    ("github", 500, _h(), "", "retry", 4),  # attempt 3: 1, 2, 4 …
    ("github", 502, _h(retry_after="7"), "", "retry", 7),
    ("github", 403, _h(retry_after="30"), "You have exceeded a secondary rate limit", "retry", 30),
    ("github", 403, _h(), "secondary rate limit", "retry", 60),
    ("github", 403, _h(x_ratelimit_remaining="0", x_ratelimit_reset="1000"), "API rate limit exceeded", "retry", 100),
    ("github", 429, _h(), "", "retry", 60),
    ("github", 401, _h(), "Bad credentials", "give_up", 0),
    ("github", 422, _h(), "No commit found for SHA", "give_up", 0),
    ("gitlab", 400, _h(), '{"message":"Cannot transition status via :run from :running"}', "done", 0),
    ("gitlab", 400, _h(), '{"message":"state is invalid"}', "give_up", 0),
    ("gitlab", 404, _h(), "404 Project Not Found", "give_up", 0),
])
def test_classify(provider: str, status: int, headers: httpx.Headers, body: str, kind: str, after: float) -> None:
    out = classify(provider, status, headers, body, attempt=3, cap=300, now=900.0)
    assert out.kind == kind
    if kind == "retry":
        assert out.after == after


def test_current_state_reads_the_newest_of_our_context() -> None:
    gh = [{"context": "fornax/a", "state": "success"}, {"context": "other", "state": "failure"},
          {"context": "fornax/a", "state": "pending"}]
    assert current_state("github", gh, "fornax/a") == "success"  # GitHub lists newest first
    gl = [{"id": 2, "name": "fornax/a", "status": "success"}, {"id": 1, "name": "fornax/a", "status": "running"}]
    assert current_state("gitlab", gl, "fornax/a") == "success"
    assert current_state("github", {"message": "x"}, "fornax/a") is None
