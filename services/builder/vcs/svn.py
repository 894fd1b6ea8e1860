"""svn for the VCS port: credentials through --password-from-stdin; tags are URL-to-URL copies."""

from __future__ import annotations

import contextlib
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from shared.logwriter import mask

from . import PROBE_TIMEOUT, OnLine, RepoSpec, VcsError
from .proc import Ran, last_lines, run_command, scrub


class Svn:
    """The `svn` command-line client (no client-side hooks; never run in the workspace after the checkout)."""

    def __init__(self, probe_timeout: float = PROBE_TIMEOUT, timeout: float = 600.0) -> None:
        self.probe_timeout = probe_timeout
        self.timeout = timeout

    async def run(
        self,
        repo: RepoSpec,
        *args: str,
        cwd: Path | None = None,
        timeout: float | None = None,
        on_line: OnLine | None = None,
    ) -> Ran:
        argv = ["svn", "--non-interactive", "--no-auth-cache"]
        stdin = None
        if repo.username:
            argv += ["--username", repo.username]
        if repo.secret:
            argv += ["--password-from-stdin"]
            stdin = repo.secret + "\n"
        return await run_command(
            [*argv, *args],
            cwd=cwd,
            stdin=stdin,
            timeout=timeout or self.timeout,
            on_line=on_line,
            secrets=repo.secrets(),
            clean=lambda text: scrub(text, repo),
        )

    async def reach(self, repo: RepoSpec) -> Ran:
        return await self.run(repo, "info", "--", repo.url, timeout=self.probe_timeout)

    async def checkout(self, repo: RepoSpec, dest: Path, commit: str | None, on_line: OnLine) -> str:
        rev = (commit or "HEAD").removeprefix("r")
        if rev != "HEAD" and not rev.isdigit():
            raise VcsError(f"unknown commit: {commit!r} is not an svn revision")
        info = await self.run(
            repo, "info", "--show-item", "last-changed-revision", "--", f"{repo.url}@{rev}"
        )
        if info.code != 0:
            raise VcsError(
                f"unknown commit: revision {rev} of {mask(repo.url, repo.secrets())}: {last_lines(info.out, repo)}"
                if rev != "HEAD"
                else f"svn info failed: {last_lines(info.out, repo)}"
            )
        resolved = rev if rev != "HEAD" else info.out.strip().splitlines()[-1]
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        await on_line(f"$ svn checkout {mask(repo.url, repo.secrets())}@{resolved}")
        res = await self.run(
            repo, "checkout", "-q", "--", f"{repo.url}@{resolved}", str(dest), on_line=on_line
        )
        if res.code != 0:
            raise VcsError(f"svn checkout failed: {last_lines(res.out, repo)}")
        return resolved

    async def tag(self, repo: RepoSpec, name: str, commit: str, on_line: OnLine) -> None:
        url = repo.url.rstrip("/")
        if not url.endswith("/trunk"):
            raise VcsError(
                f"cannot tag: {mask(url, repo.secrets())} is not a standard svn layout "
                "(the service URL must end in /trunk, with tags/ next to it)"
            )
        tag_url = f"{url[: -len('/trunk')]}/tags/{name}"
        log = await self.run(
            repo,
            "log",
            "--xml",
            "-v",
            "--stop-on-copy",
            "-r",
            "1:HEAD",
            "-l",
            "1",
            "--",
            tag_url,
            timeout=self.probe_timeout,
        )
        if log.code == 0:
            at = None
            with contextlib.suppress(ET.ParseError):
                for path in ET.fromstring(log.out).iter("path"):
                    at = path.get("copyfrom-rev") or at
            if at == str(commit):
                await on_line(f"tag {name} already exists at r{commit}")
                return
            raise VcsError(f"tag {name} already exists at r{at or '?'}")
        await on_line(f"$ svn copy {mask(url, repo.secrets())}@{commit} {mask(tag_url, repo.secrets())}")
        res = await self.run(
            repo, "copy", "-m", f"Fornax version {name}", "--", f"{url}@{commit}", tag_url, on_line=on_line
        )
        if res.code != 0:
            raise VcsError(f"svn copy to tags/{name} failed: {last_lines(res.out, repo)}")
