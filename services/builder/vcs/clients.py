"""The real VCS adapter: `git` and `svn` command-line clients behind the port."""

from __future__ import annotations

from pathlib import Path

from shared.logwriter import mask

from . import PROBE_TIMEOUT, VCS_KINDS, OnLine, Probe, RepoSpec, VcsError
from .git import Git
from .proc import last_lines
from .svn import Svn


class GitSvn:
    """The real adapter: `git` and `svn` command-line clients."""

    def __init__(
        self, probe_timeout: float = PROBE_TIMEOUT, timeout: float = 600.0, allow_local: bool = True
    ) -> None:
        self.probe_timeout = probe_timeout
        self.timeout = timeout
        self.git = Git(probe_timeout, timeout, allow_local)
        self.svn = Svn(probe_timeout, timeout)

    async def probe(self, repo: RepoSpec) -> Probe:
        if repo.vcs not in VCS_KINDS:
            return Probe("unknownvcs", f"unknown vcs {repo.vcs!r}: use git or svn")
        try:
            res = await (self.git if repo.vcs == "git" else self.svn).reach(repo)
        except VcsError as exc:
            return Probe("missing", str(exc))
        if res.code != 0:
            return Probe(
                "missing",
                f"{repo.vcs} repository {mask(repo.url, repo.secrets())} unreachable: {last_lines(res.out, repo)}",
            )
        return Probe("healthy", "")

    async def clone(
        self, repo: RepoSpec, dest: Path, commit: str | None, branch: str | None, on_line: OnLine
    ) -> str:
        if repo.vcs == "svn":
            return await self.svn.checkout(repo, dest, commit, on_line)
        if repo.vcs != "git":
            raise VcsError(f"unknown vcs {repo.vcs!r}")
        return await self.git.clone(repo, dest, commit, branch, on_line)

    async def tag(self, repo: RepoSpec, workspace: Path, name: str, commit: str, on_line: OnLine) -> None:
        if repo.vcs == "svn":
            return await self.svn.tag(repo, name, commit, on_line)
        return await self.git.tag(repo, workspace, name, commit, on_line)
