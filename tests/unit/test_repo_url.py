"""The repository URL policy (shared/repo_url.py), its settings, host-path scrubbing, and the builder's
own check (a service stored before the policy changed)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.builder.check import on_service_event
from services.builder.core import Builder
from services.builder.vcs import FakeVcs, RepoSpec
from services.builder.vcs.proc import scrub
from shared.events import ServiceCreated
from shared.events.services import ServiceCreatedPayload
from shared.repo_url import DEFAULT_SCHEMES, RepoUrlRefused, check_repo_url, parse_repo_url, redact_credentials
from shared.settings import Settings

ALLOWED = [
    "https://github.com/org/repo.git",
    "ssh://git@github.com/org/repo.git",
    "git@github.com:org/repo.git",
    "git://git.example.org/repo.git",
    "svn://svn.example.org/repo/trunk",
    "svn+ssh://me@svn.example.org/repo/trunk",
    "HTTPS://Example.org/r.git",
]
LOCAL = ["file:///srv/git/r.git", "/srv/git/r.git", "./r.git", "../r", "r.git", "~/r.git", "file://host/r"]


@pytest.mark.parametrize("url", ALLOWED)
def test_allowed_schemes_pass(url: str) -> None:
    check_repo_url(url, schemes=DEFAULT_SCHEMES, allow_local=False)


@pytest.mark.parametrize("url", LOCAL)
def test_local_repositories_only_when_enabled(url: str) -> None:
    with pytest.raises(RepoUrlRefused, match="local repositories") as info:
        check_repo_url(url, schemes=DEFAULT_SCHEMES, allow_local=False)
    assert info.value.field == "repository.url"
    check_repo_url(url, schemes=DEFAULT_SCHEMES, allow_local=True)


@pytest.mark.parametrize(
    "url", ["http://example.org/r.git", "ext::sh -c touch% /tmp/x", "fd::3", "ftp://example.org/r", "rsync://h/r"]
)
def test_other_schemes_and_command_transports_are_refused(url: str) -> None:
    with pytest.raises(RepoUrlRefused, match="is not allowed on this server"):
        check_repo_url(url, schemes=DEFAULT_SCHEMES, allow_local=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://u:p@host/r.git",
        "https://ghp_token@host/r.git",
        "svn://u:p@host/r/trunk",
        "ssh://git:pw@host/r.git",
        "git:pw@host:r.git",
        "file://u:p@/srv/r.git",
    ],
)
def test_credentials_in_the_url_point_to_the_credential_fields(url: str) -> None:
    with pytest.raises(RepoUrlRefused) as info:
        check_repo_url(url, schemes=DEFAULT_SCHEMES, allow_local=True)
    assert "repository.username" in str(info.value) and "repository.password" in str(info.value)
    assert url not in str(info.value) and "ghp_token" not in str(info.value) and ":p" not in str(info.value)


def test_an_ssh_login_is_not_a_credential() -> None:
    assert parse_repo_url("ssh://git@host/r.git").username == "git"
    check_repo_url("ssh://git@host/r.git", schemes=DEFAULT_SCHEMES, allow_local=False)


def test_stored_credentials_are_redacted_when_shown() -> None:
    assert redact_credentials("https://u:hunter2@h/r.git") == "https://****@h/r.git"
    assert redact_credentials("https://ghp_tok@h/r.git?x=a@b") == "https://****@h/r.git?x=a@b"
    assert redact_credentials("ssh://git:pw@h/r.git") == "ssh://git:****@h/r.git"
    for url in ("ssh://git@h/r.git", "https://h/a@b.git", "git@h:r.git", "/srv/r.git"):
        assert redact_credentials(url) == url


@given(st.text(max_size=80))
def test_the_check_never_raises_anything_else(url: str) -> None:
    try:
        check_repo_url(url, schemes=DEFAULT_SCHEMES, allow_local=False)
    except RepoUrlRefused as exc:
        assert str(exc).startswith("repository.url")


def test_settings_defaults_parsing_and_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORNAX_REPO_URL_SCHEMES", "FORNAX_REPO_ALLOW_LOCAL"):
        monkeypatch.delenv(name, raising=False)  # the test stack turns local repositories on
    s = Settings()
    assert s.repo_url_schemes == list(DEFAULT_SCHEMES) and s.repo_allow_local is False
    monkeypatch.setenv("FORNAX_REPO_URL_SCHEMES", "HTTPS, ssh ,http")
    monkeypatch.setenv("FORNAX_REPO_ALLOW_LOCAL", "true")
    s = Settings()
    assert s.repo_url_schemes == ["https", "ssh", "http"] and s.repo_allow_local is True
    for bad in ("https,file", "ext", "fd", "sh -c"):
        monkeypatch.setenv("FORNAX_REPO_URL_SCHEMES", bad)
        with pytest.raises(ValueError, match="repo_url_schemes"):
            Settings()


def test_scrub_keeps_the_url_as_given_and_hides_other_host_paths() -> None:
    repo = RepoSpec("file:///srv/repos/r.git")
    text = (
        "fatal: '/srv/repos/r.git' does not appear to be a git repository / "
        "fatal: not a git repository: /var/lib/fornax/secret / "
        "Cloning into '/var/lib/fornax/workspaces/v1'... / 100% (3/3) https://h/a/b"
    )
    out = scrub(text, repo)
    assert "'file:///srv/repos/r.git' does not appear" in out
    assert "/var/lib" not in out and out.count("<path>") == 2
    assert "(3/3) https://h/a/b" in out
    masked = scrub("https://u:hunter22@h/r failed", RepoSpec("https://u:hunter22@h/r", password="hunter22"))
    assert "hunter22" not in masked


# -- the builder's own check --------------------------------------------------------------------


class _Bus:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def publish(self, *events: Any) -> None:
        self.events.extend(events)


class _State:
    async def repo_spec(self, service: dict, repository: dict | None = None) -> RepoSpec:
        repo = repository or {}
        return RepoSpec(url=repo["url"], vcs=repo.get("vcs", "git"))


def _builder(**settings: Any) -> Builder:
    return Builder(
        settings=Settings(**settings), store=None, bus=_Bus(), vcs=FakeVcs(), images=None,  # type: ignore[arg-type]
        registry=None, hosts=None, state=_State(),  # type: ignore[arg-type]
    )


def test_builder_refuses_a_url_the_policy_does_not_allow() -> None:
    b = _builder(repo_allow_local=False)
    assert "not allowed" in (b.url_refused(RepoSpec("file:///srv/other-user/r.git")) or "")
    assert "repository.password" in (b.url_refused(RepoSpec("https://u:p@h/r.git")) or "")
    assert b.url_refused(RepoSpec("https://h/r.git")) is None

    event = ServiceCreated.make(
        "svc1",
        ServiceCreatedPayload(user_id="u", name="s", repository={"url": "/srv/other-user/r.git"}),  # type: ignore[arg-type]
        actor="u",
    )
    checked = asyncio.run(on_service_event(b, event))
    assert checked is not None and checked.payload.status == "missing"
    assert "local repositories" in checked.payload.message
    assert b.vcs.clones == []  # type: ignore[attr-defined]
    allowed = _builder(repo_allow_local=True)
    assert asyncio.run(on_service_event(allowed, event)).payload.status == "healthy"  # type: ignore[union-attr]
