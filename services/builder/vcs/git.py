"""git for the VCS port: the checkout's git directory lives beside the workspace, never inside it."""

from __future__ import annotations

import contextlib
import re
import shutil
import stat
import tempfile
from pathlib import Path

from shared.logwriter import mask

from . import PROBE_TIMEOUT, OnLine, RepoSpec, VcsError
from .proc import Ran, last_lines, run_command, scrub

_SHA = re.compile(r"^[0-9a-f]{7,40}$")
_ASKPASS = """#!/bin/sh
case "$1" in
  Username*|username*) printf '%s\\n' "$FORNAX_VCS_USERNAME" ;;
  *) printf '%s\\n' "$FORNAX_VCS_SECRET" ;;
esac
"""


def git_dir(workspace: Path) -> Path:
    """The git directory of a workspace's checkout: beside it (`<workspace>.git`), out of the steps' reach."""
    return workspace.with_name(workspace.name + ".git")


class Git:
    """The `git` command-line client."""

    def __init__(
        self, probe_timeout: float = PROBE_TIMEOUT, timeout: float = 600.0, allow_local: bool = True
    ) -> None:
        self.probe_timeout = probe_timeout
        self.timeout = timeout
        # Pinned on every git run: nothing a repository's config or a planted hook says can make the
        # builder run a program (the git directory is out of the steps' reach already; this is the
        # second wall). GIT_SSH_COMMAND (below) already wins over core.sshCommand.
        self._git_safety = [
            "-c", "core.hooksPath=/dev/null",
            "-c", "core.fsmonitor=false",
            "-c", "protocol.ext.allow=never",
            "-c", "protocol.fd.allow=never",
            *([] if allow_local else ["-c", "protocol.file.allow=never"]),
        ]  # fmt: skip

    @contextlib.contextmanager
    def _git_env(self, repo: RepoSpec):
        env = {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
        }
        tmp = None
        if repo.secret:
            tmp = tempfile.mkdtemp(prefix="fornax-askpass-")
            script = Path(tmp) / "askpass"
            script.write_text(_ASKPASS)
            script.chmod(stat.S_IRWXU)
            env.update(
                GIT_ASKPASS=str(script),
                FORNAX_VCS_USERNAME=repo.username or "x-access-token",
                FORNAX_VCS_SECRET=repo.secret,
            )
        try:
            yield env
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    async def run(
        self,
        repo: RepoSpec,
        *args: str,
        cwd: Path | None = None,
        timeout: float | None = None,
        on_line: OnLine | None = None,
        gitdir: Path | None = None,
    ) -> Ran:
        """git `args` for `repo`; with `gitdir` it works on that git directory and no other (no
        discovery from the working directory, which defaults to one that is no repository)."""
        where = ["--git-dir", str(gitdir)] if gitdir is not None else []
        with self._git_env(repo) as env:
            return await run_command(
                [
                    "git",
                    *where,
                    *self._git_safety,
                    "-c",
                    "user.name=Fornax",
                    "-c",
                    "user.email=fornax@localhost",
                    "-c",
                    "advice.detachedHead=false",
                    *args,
                ],
                cwd=cwd or gitdir or Path("/"),
                env=env,
                timeout=timeout or self.timeout,
                on_line=on_line,
                secrets=repo.secrets(),
                clean=lambda text: scrub(text, repo),
            )

    async def reach(self, repo: RepoSpec) -> Ran:
        return await self.run(repo, "ls-remote", "--heads", "--", repo.url, timeout=self.probe_timeout)

    async def clone(
        self, repo: RepoSpec, dest: Path, commit: str | None, branch: str | None, on_line: OnLine
    ) -> str:
        gitdir = git_dir(dest)
        for old in (dest, gitdir):
            shutil.rmtree(old, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        await on_line(f"$ git clone {mask(repo.url, repo.secrets())}")
        res = await self.run(
            repo,
            "clone",
            "--no-checkout",
            "--progress",
            f"--separate-git-dir={gitdir}",
            "--",
            repo.url,
            str(dest),
            on_line=on_line,
        )
        if res.code != 0:
            raise VcsError(f"git clone failed: {last_lines(res.out, repo)}")
        # The checkout gets no `.git` at all (the gitfile would only tell steps a host path).
        (dest / ".git").unlink(missing_ok=True)
        ref = commit or (f"origin/{branch}" if branch else "HEAD")
        candidates = [ref] if not commit or _SHA.match(commit) else [f"origin/{commit}", commit]
        resolved = None
        for cand in candidates:
            rev = await self.run(
                repo, "rev-parse", "--verify", "--quiet", f"{cand}^{{commit}}", gitdir=gitdir
            )
            if rev.code == 0 and rev.out.strip():
                resolved = rev.out.strip().splitlines()[-1]
                break
        if resolved is None:
            what = f"commit {commit}" if commit else f"branch {branch}" if branch else "the default branch"
            raise VcsError(f"unknown commit: {what} is not in the repository")
        await on_line(f"$ git checkout {resolved}")
        res = await self.run(
            repo,
            "--work-tree",
            str(dest),
            "checkout",
            "-q",
            "--detach",
            resolved,
            gitdir=gitdir,
            cwd=dest,
            on_line=on_line,
        )
        if res.code != 0:
            raise VcsError(f"git checkout {resolved} failed: {last_lines(res.out, repo)}")
        return resolved

    async def tag(self, repo: RepoSpec, workspace: Path, name: str, commit: str, on_line: OnLine) -> None:
        existing = await self.run(
            repo,
            "ls-remote",
            "--tags",
            "--",
            repo.url,
            f"refs/tags/{name}",
            f"refs/tags/{name}^{{}}",
            timeout=self.probe_timeout,
        )
        if existing.code != 0:
            raise VcsError(f"git ls-remote failed: {last_lines(existing.out, repo)}")
        refs: dict[str, str] = {}
        for line in existing.out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref:
                refs[ref] = sha
        at = refs.get(f"refs/tags/{name}^{{}}") or refs.get(f"refs/tags/{name}")
        if at is not None:
            if at == commit:
                await on_line(f"tag {name} already exists at {commit}")
                return
            raise VcsError(f"tag {name} already exists at {at}")
        # Tag in the checkout's own git directory (beside the workspace), or — when this process did
        # not clone it — in a fresh bare clone; never through anything inside the workspace.
        gitdir = git_dir(workspace)
        if not (gitdir / "HEAD").is_file():
            shutil.rmtree(gitdir, ignore_errors=True)
            await on_line(f"$ git clone --bare {mask(repo.url, repo.secrets())}")
            res = await self.run(
                repo, "clone", "--bare", "-q", "--", repo.url, str(gitdir), on_line=on_line
            )
            if res.code != 0:
                raise VcsError(f"git clone failed: {last_lines(res.out, repo)}")
        res = await self.run(
            repo,
            "tag",
            "-f",
            "-a",
            name,
            "-m",
            f"Fornax version {name}",
            commit,
            gitdir=gitdir,
            on_line=on_line,
        )
        if res.code != 0:
            raise VcsError(f"git tag failed: {last_lines(res.out, repo)}")
        await on_line(f"$ git push origin refs/tags/{name}")
        res = await self.run(
            repo, "push", "--", repo.url, f"refs/tags/{name}", gitdir=gitdir, on_line=on_line
        )
        if res.code != 0:
            raise VcsError(f"git push of tag {name} failed: {last_lines(res.out, repo)}")
