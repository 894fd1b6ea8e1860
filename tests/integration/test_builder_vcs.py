"""The real VCS adapter against repositories on the file system (git bare repos, svnadmin repos)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.builder.vcs import RepoSpec, VcsError
from services.builder.vcs.clients import GitSvn
from tests.integration.builder_helpers import GitRepo, SvnRepo, sh

vcs = GitSvn(probe_timeout=10)


def run(coro):
    return asyncio.run(coro)


class Lines(list):
    async def __call__(self, text: str) -> None:
        self.append(text)


def test_git_probe(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit({"a": "1"})
    assert run(vcs.probe(RepoSpec(repo.url))).status == "healthy"
    missing = run(vcs.probe(RepoSpec("123456")))
    assert missing.status == "missing" and "unreachable" in missing.message
    assert run(vcs.probe(RepoSpec(repo.url, vcs="hg"))).status == "unknownvcs"


def test_git_clone_at_commit_and_branch_head(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    first = repo.commit({"f": "one"})
    second = repo.commit({"f": "two"})
    lines = Lines()
    assert run(vcs.clone(RepoSpec(repo.url), tmp_path / "w1", first, None, lines)) == first
    assert (tmp_path / "w1" / "f").read_text() == "one"
    assert run(vcs.clone(RepoSpec(repo.url), tmp_path / "w2", None, "main", lines)) == second
    assert run(vcs.clone(RepoSpec(repo.url), tmp_path / "w3", None, None, lines)) == second
    assert any(line.startswith("$ git clone") for line in lines)
    with pytest.raises(VcsError, match="unknown commit"):
        run(vcs.clone(RepoSpec(repo.url), tmp_path / "w4", "f" * 40, None, lines))
    with pytest.raises(VcsError, match="unknown commit"):
        run(vcs.clone(RepoSpec(repo.url), tmp_path / "w5", None, "no-such-branch", lines))


def test_git_tag_is_annotated_idempotent_and_refuses_another_commit(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    first = repo.commit({"f": "one"})
    second = repo.commit({"f": "two"})
    ws = tmp_path / "w"
    run(vcs.clone(RepoSpec(repo.url), ws, first, None, Lines()))
    run(vcs.tag(RepoSpec(repo.url), ws, "v1", first, Lines()))
    assert repo.tag_commit("v1") == first and repo.tag_type("v1") == "tag"
    run(vcs.tag(RepoSpec(repo.url), ws, "v1", first, Lines()))  # again: fine
    with pytest.raises(VcsError, match=f"tag v1 already exists at {first}"):
        run(vcs.tag(RepoSpec(repo.url), ws, "v1", second, Lines()))


def test_credentials_never_show_in_messages(tmp_path: Path) -> None:
    secret = "hunter2-token-xyz"
    spec = RepoSpec("http://127.0.0.1:9/repo.git", username="bob", token=secret)
    probe = run(vcs.probe(spec))
    assert probe.status == "missing" and secret not in probe.message
    with pytest.raises(VcsError) as info:
        run(
            vcs.clone(
                RepoSpec(f"http://bob:{secret}@127.0.0.1:9/r.git", password=secret),
                tmp_path / "w",
                None,
                None,
                Lines(),
            )
        )
    assert secret not in str(info.value)


def test_svn_checkout_and_tag(tmp_path: Path) -> None:
    repo = SvnRepo(tmp_path)
    rev1 = repo.commit({"Dockerfile": "FROM x\n"})
    rev2 = repo.commit({"Dockerfile": "FROM y\n"})
    spec = RepoSpec(repo.url, vcs="svn")
    assert run(vcs.probe(spec)).status == "healthy"
    assert run(vcs.probe(RepoSpec(f"file://{tmp_path}/nothing", vcs="svn"))).status == "missing"
    assert run(vcs.clone(spec, tmp_path / "w", None, None, Lines())) == rev2
    assert run(vcs.clone(spec, tmp_path / "w1", f"r{rev1}", None, Lines())) == rev1
    assert (tmp_path / "w1" / "Dockerfile").read_text() == "FROM x\n"
    with pytest.raises(VcsError, match="unknown commit"):
        run(vcs.clone(spec, tmp_path / "w2", "999", None, Lines()))
    run(vcs.tag(spec, tmp_path / "w1", "v1", rev1, Lines()))
    assert repo.tag_source("v1") == rev1
    run(vcs.tag(spec, tmp_path / "w1", "v1", rev1, Lines()))  # same revision: fine
    with pytest.raises(VcsError, match=f"tag v1 already exists at r{rev1}"):
        run(vcs.tag(spec, tmp_path / "w1", "v1", rev2, Lines()))


def test_svn_tag_needs_the_trunk_layout(tmp_path: Path) -> None:
    repo = SvnRepo(tmp_path)
    rev = repo.commit({"a": "1"})
    spec = RepoSpec(repo.base, vcs="svn")  # the repository root, not .../trunk
    with pytest.raises(VcsError, match="not a standard svn layout"):
        run(vcs.tag(spec, tmp_path, "v1", rev, Lines()))
    assert sh("svn", "ls", f"{repo.base}/tags") == ""
