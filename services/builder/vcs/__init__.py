"""The VCS port: probe, clone at a commit, tag — git and svn through subprocesses (`clients.GitSvn`, over
`git.Git` and `svn.Svn`), and a steerable fake.

Credentials never reach argv or logs: git gets them through GIT_ASKPASS (a script that echoes
environment variables set only for that subprocess), svn through --password-from-stdin; every
message leaving this module is masked, and host paths in it are replaced (the repository's own
path by its URL as the user gave it, any other by `<path>`).

Pipeline steps get the workspace bind-mounted read-write, so nothing in it may steer a git that runs
on the builder host: the git directory of a checkout lives beside the workspace (`git_dir`), never
inside it, every git here names it explicitly (`--git-dir`, so a `.git` a step plants is never
looked at), and runs with hooks and fsmonitor off and the ext:: transport (and file://, unless local
repositories are enabled) refused. svn runs no client-side hooks and is never run in the workspace
after the checkout (tags are URL-to-URL copies).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

OnLine = Callable[[str], Awaitable[None]]
PROBE_TIMEOUT = 20.0
VCS_KINDS = ("git", "svn")


class VcsError(Exception):
    """A VCS operation failed; the message is safe to show (credentials masked)."""


@dataclass(frozen=True)
class RepoSpec:
    url: str
    vcs: str = "git"
    username: str | None = None
    password: str | None = None
    token: str | None = None

    @property
    def secret(self) -> str | None:
        return self.token or self.password

    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.token) if s]


@dataclass(frozen=True)
class Probe:
    status: str  # healthy | missing | unknownvcs
    message: str = ""


class Vcs(Protocol):
    async def probe(self, repo: RepoSpec) -> Probe:
        """Is the repository reachable with its credentials?"""

    async def clone(
        self, repo: RepoSpec, dest: Path, commit: str | None, branch: str | None, on_line: OnLine
    ) -> str:
        """Fresh checkout of `commit` (default: the branch head) into `dest`; returns the resolved commit."""

    async def tag(self, repo: RepoSpec, workspace: Path, name: str, commit: str, on_line: OnLine) -> None:
        """Tag `commit` as `name` in the origin; same commit again is fine, another commit is an error."""


@dataclass
class FakeVcs:
    """Steerable fake: `probes[url]`, `heads[url]`, `fail_clone[url]`, `files` written on clone, tags kept."""

    probes: dict[str, Probe] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)
    fail_clone: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=lambda: {"Dockerfile": "FROM fornax/busybox:latest\n"})
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    clones: list[tuple[str, str]] = field(default_factory=list)

    async def probe(self, repo: RepoSpec) -> Probe:
        if repo.vcs not in VCS_KINDS:
            return Probe("unknownvcs", f"unknown vcs {repo.vcs!r}: use git or svn")
        return self.probes.get(repo.url, Probe("healthy"))

    async def clone(
        self, repo: RepoSpec, dest: Path, commit: str | None, branch: str | None, on_line: OnLine
    ) -> str:
        if repo.url in self.fail_clone:
            raise VcsError(self.fail_clone[repo.url])
        resolved = commit or self.heads.get(repo.url, "0" * 40)
        dest.mkdir(parents=True, exist_ok=True)
        for name, text in self.files.items():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_text(text)
        self.clones.append((repo.url, resolved))
        await on_line(f"fake clone {repo.url} at {resolved}")
        return resolved

    async def tag(self, repo: RepoSpec, workspace: Path, name: str, commit: str, on_line: OnLine) -> None:
        at = self.tags.get((repo.url, name))
        if at is not None and at != commit:
            raise VcsError(f"tag {name} already exists at {at}")
        self.tags[(repo.url, name)] = commit
