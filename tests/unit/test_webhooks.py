"""Webhook parsing: recorded GitHub/GitLab payloads, signatures, URL normalization, and fuzz properties."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.webhooks import (
    ZERO_SHA,
    Ignored,
    Push,
    WebhookError,
    github_signature_ok,
    gitlab_token_ok,
    normalize_url,
    parse_github,
    parse_gitlab,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"


def recorded(name: str) -> tuple[dict[str, str], bytes]:
    return json.loads((FIXTURES / f"{name}.headers.json").read_text()), (
        FIXTURES / f"{name}.json"
    ).read_bytes()


def test_github_push_branch() -> None:
    result = parse_github(*recorded("github_push"))
    assert isinstance(result, Push)
    assert result.provider == "github"
    assert result.ref == "refs/heads/feature/health"
    assert result.branch == "feature/health" and result.tag is None and not result.deleted
    assert result.after == "6dcb09b5b57875f334f61aebed695e2e4193db5e"
    assert result.before == "a10867b14bb761a232cd80139fbd4c0d33264240"
    assert result.pusher == "mona"
    assert result.message and result.message.startswith("Add health endpoint")
    assert result.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert "https://github.com/octo-org/hello-fornax.git" in result.repo_urls
    assert "git@github.com:octo-org/hello-fornax.git" in result.repo_urls
    assert "https://github.com/octo-org/hello-fornax" in result.repo_urls


def test_github_tag_push_is_a_push_with_tag() -> None:
    result = parse_github(*recorded("github_tag_push"))
    assert isinstance(result, Push)
    assert result.tag == "v1.2.0" and result.branch is None and not result.deleted


def test_github_branch_delete() -> None:
    result = parse_github(*recorded("github_branch_delete"))
    assert isinstance(result, Push)
    assert result.deleted and result.branch == "old-feature" and result.after == ZERO_SHA
    assert result.message is None


def test_github_ping_is_ignored() -> None:
    assert parse_github(*recorded("github_ping")) == Ignored("ping")


def test_github_other_event_is_ignored() -> None:
    headers, body = recorded("github_push")
    result = parse_github({**headers, "X-GitHub-Event": "issues"}, body)
    assert isinstance(result, Ignored) and "issues" in result.reason


def test_github_missing_event_header() -> None:
    _, body = recorded("github_push")
    with pytest.raises(WebhookError):
        parse_github({}, body)


def test_github_form_encoded_payload() -> None:
    from urllib.parse import urlencode

    headers, body = recorded("github_push")
    form = urlencode({"payload": body.decode()}).encode()
    result = parse_github({**headers, "Content-Type": "application/x-www-form-urlencoded"}, form)
    assert isinstance(result, Push) and result.branch == "feature/health"


def test_github_without_delivery_header_uses_body_hash() -> None:
    headers, body = recorded("github_push")
    headers = {k: v for k, v in headers.items() if k != "X-GitHub-Delivery"}
    a, b = parse_github(headers, body), parse_github(headers, body)
    assert isinstance(a, Push) and isinstance(b, Push)
    assert a.delivery_id == b.delivery_id and a.delivery_id.startswith("sha256-")
    other = parse_github(headers, body.replace(b"feature/health", b"feature/other"))
    assert isinstance(other, Push) and other.delivery_id != a.delivery_id


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"ref": 5}',
        b'{"ref": "refs/heads/x"}',
        b'{"ref": "refs/heads/x", "repository": {"name": "x"}}',
        b"\xff\xfe",
    ],
)
def test_github_malformed_push(body: bytes) -> None:
    with pytest.raises(WebhookError):
        parse_github({"X-GitHub-Event": "push"}, body)


def test_github_push_to_other_ref_is_ignored() -> None:
    headers, body = recorded("github_push")
    data = json.loads(body)
    data["ref"] = "refs/pull/1/head"
    assert isinstance(parse_github(headers, json.dumps(data).encode()), Ignored)


def test_gitlab_push() -> None:
    result = parse_gitlab(*recorded("gitlab_push"))
    assert isinstance(result, Push)
    assert result.provider == "gitlab"
    assert result.branch == "master" and result.tag is None and not result.deleted
    assert result.after == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    assert result.pusher == "jsmith"
    assert result.message == "fixed readme"
    assert result.delivery_id == "13792a34-cac6-4fda-95a8-c58e00a3954e"
    assert "http://gitlab.example.com/mike/diaspora.git" in result.repo_urls
    assert "git@gitlab.example.com:mike/diaspora.git" in result.repo_urls


def test_gitlab_tag_push() -> None:
    result = parse_gitlab(*recorded("gitlab_tag_push"))
    assert isinstance(result, Push) and result.tag == "v1.0.0" and result.branch is None


def test_gitlab_branch_delete() -> None:
    result = parse_gitlab(*recorded("gitlab_branch_delete"))
    assert isinstance(result, Push) and result.deleted and result.branch == "stale"


def test_gitlab_other_events_ignored_and_mismatch_rejected() -> None:
    headers, body = recorded("gitlab_push")
    assert isinstance(parse_gitlab({**headers, "X-Gitlab-Event": "Merge Request Hook"}, body), Ignored)
    with pytest.raises(WebhookError):
        parse_gitlab({**headers, "X-Gitlab-Event": "Tag Push Hook"}, body)
    with pytest.raises(WebhookError):
        parse_gitlab({}, body)


def test_github_signature() -> None:
    _, body = recorded("github_push")
    good = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert github_signature_ok("s3cret", body, good)
    assert not github_signature_ok("other", body, good)
    assert not github_signature_ok("s3cret", body + b" ", good)
    assert not github_signature_ok("s3cret", body, None)
    assert not github_signature_ok("s3cret", body, "sha1=" + good[7:])
    assert not github_signature_ok("s3cret", body, "sha256=\udcff")


def test_gitlab_token() -> None:
    assert gitlab_token_ok("tok", "tok")
    assert not gitlab_token_ok("tok", "tok2")
    assert not gitlab_token_ok("tok", None)
    assert not gitlab_token_ok("", "")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://github.com/octo-org/hello-fornax.git", "https://GitHub.com/octo-org/hello-fornax/"),
        ("HTTPS://github.com/octo-org/hello-fornax", "https://github.com/octo-org/hello-fornax.git/"),
        ("git@github.com:octo-org/hello-fornax.git", "git@GITHUB.com:octo-org/hello-fornax"),
        ("/srv/git/repo.git", "/srv/git/repo"),
    ],
)
def test_normalize_url_equal(a: str, b: str) -> None:
    assert normalize_url(a) == normalize_url(b)


def test_normalize_url_keeps_path_case() -> None:
    assert normalize_url("https://github.com/Octo/Repo") != normalize_url("https://github.com/octo/repo")


# -- properties: whatever arrives, a Push, an Ignored, or a WebhookError; never anything else ---------------

HEADER_SETS = [
    {"X-GitHub-Event": "push"},
    {"X-GitHub-Event": "ping"},
    {"X-GitHub-Event": "push", "Content-Type": "application/x-www-form-urlencoded"},
    {"X-Gitlab-Event": "Push Hook"},
    {"X-Gitlab-Event": "Tag Push Hook"},
    {},
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
push_like = st.fixed_dictionaries(
    {},
    optional={
        "ref": st.one_of(
            st.text(max_size=30), st.sampled_from(["refs/heads/main", "refs/tags/v1", "refs/x"]), json_values
        ),
        "after": st.one_of(st.text(max_size=45), json_values),
        "before": json_values,
        "deleted": json_values,
        "object_kind": st.one_of(st.sampled_from(["push", "tag_push"]), json_values),
        "repository": st.one_of(
            st.dictionaries(
                st.sampled_from(["clone_url", "html_url", "url", "ssh_url"]),
                st.one_of(st.text(), json_values),
            ),
            json_values,
        ),
        "project": json_values,
        "head_commit": st.one_of(st.dictionaries(st.just("message"), json_values), json_values),
        "commits": json_values,
        "pusher": json_values,
        "sender": json_values,
        "user_username": json_values,
    },
)


def _check(parser, headers: dict[str, str], body: bytes) -> None:  # type: ignore[no-untyped-def]
    try:
        result = parser(headers, body)
    except WebhookError:
        return
    assert isinstance(result, Push | Ignored)
    if isinstance(result, Push):
        assert result.repo_urls and result.ref and result.delivery_id
        # Everything a Push carries must be encodable (it goes into an event).
        json.dumps(result.__dict__, ensure_ascii=False).encode("utf-8")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=2000), headers=st.sampled_from(HEADER_SETS))
def test_any_bytes_parse_or_fail_cleanly(body: bytes, headers: dict[str, str]) -> None:
    _check(parse_github, headers, body)
    _check(parse_gitlab, headers, body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(json_values, push_like), headers=st.sampled_from(HEADER_SETS))
def test_any_json_parse_or_fail_cleanly(data: object, headers: dict[str, str]) -> None:
    body = json.dumps(data).encode()
    _check(parse_github, headers, body)
    _check(parse_gitlab, headers, body)


@settings(max_examples=100)
@given(header=st.text(max_size=80), secret=st.text(max_size=20), body=st.binary(max_size=200))
def test_signature_checks_never_raise(header: str, secret: str, body: bytes) -> None:
    assert github_signature_ok(secret, body, header) in (True, False)
    assert gitlab_token_ok(secret, header) in (True, False)


@settings(max_examples=200)
@given(url=st.text(max_size=60))
def test_normalize_url_never_raises_and_is_idempotent(url: str) -> None:
    once = normalize_url(url)
    assert normalize_url(once) == once
