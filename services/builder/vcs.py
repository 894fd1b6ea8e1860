"""The VCS port: probe, clone at a commit, tag — git and svn through subprocesses, and a steerable fake.

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

import asyncio
import contextlib
import os
import re
import shutil
import signal
import stat
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from shared.logwriter import mask
from shared.repo_url import parse_repo_url

OnLine = Callable[[str], Awaitable[None]]
PROBE_TIMEOUT = 20.0
VCS_KINDS = ("git", "svn")
_SHA = re.compile(r"^[0-9a-f]{7,40}$")


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


# -- subprocess plumbing --------------------------------------------------------------------------
_ASKPASS = """#!/bin/sh
case "$1" in
  Username*|username*) printf '%s\\n' "$FORNAX_VCS_USERNAME" ;;
  *) printf '%s\\n' "$FORNAX_VCS_SECRET" ;;
esac
"""


@dataclass
class _Run:
    code: int
    out: str


async def _run(
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float | None = None,
    on_line: OnLine | None = None,
    secrets: list[str] | None = None,
    clean: Callable[[str], str] | None = None,
) -> _Run:
    """Run a command in its own process group; killed on timeout or when the caller is cancelled.
    The output keeps secrets masked; lines for `on_line` also go through `clean` (host paths)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(cwd) if cwd else None,
        env={**os.environ, "LC_ALL": "C", **(env or {})},
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []

    async def pump() -> None:
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin.encode())
            await proc.stdin.drain()
            proc.stdin.close()
        assert proc.stdout is not None
        async for raw in proc.stdout:
            for part in raw.decode("utf-8", "replace").replace("\r", "\n").splitlines():
                if part.strip():
                    text = mask(part, secrets or [])
                    lines.append(text)
                    if on_line is not None:
                        await on_line(clean(text) if clean is not None else text)
        await proc.wait()

    try:
        await asyncio.wait_for(pump(), timeout)
    except TimeoutError:
        raise VcsError(f"`{argv[0]} {_command(argv)}` timed out after {timeout:.0f}s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await proc.wait()
    return _Run(proc.returncode or 0, "\n".join(lines))


def _command(argv: list[str]) -> str:
    """The subcommand of a git/svn argv (after its global options)."""
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-c", "--git-dir", "--work-tree"):
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return ""


# git's advice after a failed fetch says nothing the line before it did not.
_BOILERPLATE = ("Please make sure you have the correct access rights", "and the repository exists.")


def _last(out: str, repo: RepoSpec, n: int = 3) -> str:
    """The last lines of a failed command's output, fit for a message (host paths scrubbed)."""
    lines = [line for line in out.strip().splitlines() if not line.startswith(_BOILERPLATE)]
    return scrub(" / ".join(lines[-n:]), repo) or "no output"


def git_dir(workspace: Path) -> Path:
    """The git directory of a workspace's checkout: beside it (`<workspace>.git`), out of the steps' reach."""
    return workspace.with_name(workspace.name + ".git")


# An absolute path standing on its own (not the path part of a URL, not `a/b`).
_HOST_PATH = re.compile(r"(?<![\w.:/~+-])/[^\s'\"`:,;()<>\[\]]+")
_KEEP = "\x00repository\x00"


def scrub(text: str, repo: RepoSpec) -> str:
    """`text` with the repository's secrets masked and host paths replaced: the repository's own local
    path by its URL as the user gave it, any other absolute path by `<path>`."""
    secrets = repo.secrets()
    text, url = mask(text, secrets), mask(repo.url, secrets)
    own = [url]
    with contextlib.suppress(ValueError):
        if parse_repo_url(repo.url).local:
            path = unquote(urlsplit(repo.url).path) if repo.url.startswith("file:") else repo.url
            own += [path, os.path.abspath(path), os.path.realpath(path)]
    for form in sorted({f for f in own if len(f) > 1}, key=len, reverse=True):
        text = text.replace(form, _KEEP)
    return _HOST_PATH.sub("<path>", text).replace(_KEEP, url)


class GitSvn:
    """The real adapter: `git` and `svn` command-line clients."""

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

    # -- git --------------------------------------------------------------------------------------
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

    async def _git(
        self,
        repo: RepoSpec,
        *args: str,
        cwd: Path | None = None,
        timeout: float | None = None,
        on_line: OnLine | None = None,
        gitdir: Path | None = None,
    ) -> _Run:
        """git `args` for `repo`; with `gitdir` it works on that git directory and no other (no
        discovery from the working directory, which defaults to one that is no repository)."""
        where = ["--git-dir", str(gitdir)] if gitdir is not None else []
        with self._git_env(repo) as env:
            return await _run(
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

    # -- svn --------------------------------------------------------------------------------------
    async def _svn(
        self,
        repo: RepoSpec,
        *args: str,
        cwd: Path | None = None,
        timeout: float | None = None,
        on_line: OnLine | None = None,
    ) -> _Run:
        argv = ["svn", "--non-interactive", "--no-auth-cache"]
        stdin = None
        if repo.username:
            argv += ["--username", repo.username]
        if repo.secret:
            argv += ["--password-from-stdin"]
            stdin = repo.secret + "\n"
        return await _run(
            [*argv, *args],
            cwd=cwd,
            stdin=stdin,
            timeout=timeout or self.timeout,
            on_line=on_line,
            secrets=repo.secrets(),
            clean=lambda text: scrub(text, repo),
        )

    # -- the port ---------------------------------------------------------------------------------
    async def probe(self, repo: RepoSpec) -> Probe:
        if repo.vcs not in VCS_KINDS:
            return Probe("unknownvcs", f"unknown vcs {repo.vcs!r}: use git or svn")
        try:
            if repo.vcs == "git":
                res = await self._git(
                    repo, "ls-remote", "--heads", "--", repo.url, timeout=self.probe_timeout
                )
            else:
                res = await self._svn(repo, "info", "--", repo.url, timeout=self.probe_timeout)
        except VcsError as exc:
            return Probe("missing", str(exc))
        if res.code != 0:
            return Probe(
                "missing",
                f"{repo.vcs} repository {mask(repo.url, repo.secrets())} unreachable: {_last(res.out, repo)}",
            )
        return Probe("healthy", "")

    async def clone(
        self, repo: RepoSpec, dest: Path, commit: str | None, branch: str | None, on_line: OnLine
    ) -> str:
        if repo.vcs == "svn":
            return await self._svn_checkout(repo, dest, commit, on_line)
        if repo.vcs != "git":
            raise VcsError(f"unknown vcs {repo.vcs!r}")
        gitdir = git_dir(dest)
        for old in (dest, gitdir):
            shutil.rmtree(old, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        await on_line(f"$ git clone {mask(repo.url, repo.secrets())}")
        res = await self._git(
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
            raise VcsError(f"git clone failed: {_last(res.out, repo)}")
        # The checkout gets no `.git` at all (the gitfile would only tell steps a host path).
        (dest / ".git").unlink(missing_ok=True)
        ref = commit or (f"origin/{branch}" if branch else "HEAD")
        candidates = [ref] if not commit or _SHA.match(commit) else [f"origin/{commit}", commit]
        resolved = None
        for cand in candidates:
            rev = await self._git(
                repo, "rev-parse", "--verify", "--quiet", f"{cand}^{{commit}}", gitdir=gitdir
            )
            if rev.code == 0 and rev.out.strip():
                resolved = rev.out.strip().splitlines()[-1]
                break
        if resolved is None:
            what = f"commit {commit}" if commit else f"branch {branch}" if branch else "the default branch"
            raise VcsError(f"unknown commit: {what} is not in the repository")
        await on_line(f"$ git checkout {resolved}")
        res = await self._git(
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
            raise VcsError(f"git checkout {resolved} failed: {_last(res.out, repo)}")
        return resolved

    async def _svn_checkout(self, repo: RepoSpec, dest: Path, commit: str | None, on_line: OnLine) -> str:
        rev = (commit or "HEAD").removeprefix("r")
        if rev != "HEAD" and not rev.isdigit():
            raise VcsError(f"unknown commit: {commit!r} is not an svn revision")
        info = await self._svn(
            repo, "info", "--show-item", "last-changed-revision", "--", f"{repo.url}@{rev}"
        )
        if info.code != 0:
            raise VcsError(
                f"unknown commit: revision {rev} of {mask(repo.url, repo.secrets())}: {_last(info.out, repo)}"
                if rev != "HEAD"
                else f"svn info failed: {_last(info.out, repo)}"
            )
        resolved = rev if rev != "HEAD" else info.out.strip().splitlines()[-1]
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        await on_line(f"$ svn checkout {mask(repo.url, repo.secrets())}@{resolved}")
        res = await self._svn(
            repo, "checkout", "-q", "--", f"{repo.url}@{resolved}", str(dest), on_line=on_line
        )
        if res.code != 0:
            raise VcsError(f"svn checkout failed: {_last(res.out, repo)}")
        return resolved

    async def tag(self, repo: RepoSpec, workspace: Path, name: str, commit: str, on_line: OnLine) -> None:
        if repo.vcs == "svn":
            return await self._svn_tag(repo, name, commit, on_line)
        existing = await self._git(
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
            raise VcsError(f"git ls-remote failed: {_last(existing.out, repo)}")
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
            res = await self._git(
                repo, "clone", "--bare", "-q", "--", repo.url, str(gitdir), on_line=on_line
            )
            if res.code != 0:
                raise VcsError(f"git clone failed: {_last(res.out, repo)}")
        res = await self._git(
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
            raise VcsError(f"git tag failed: {_last(res.out, repo)}")
        await on_line(f"$ git push origin refs/tags/{name}")
        res = await self._git(
            repo, "push", "--", repo.url, f"refs/tags/{name}", gitdir=gitdir, on_line=on_line
        )
        if res.code != 0:
            raise VcsError(f"git push of tag {name} failed: {_last(res.out, repo)}")

    async def _svn_tag(self, repo: RepoSpec, name: str, commit: str, on_line: OnLine) -> None:
        url = repo.url.rstrip("/")
        if not url.endswith("/trunk"):
            raise VcsError(
                f"cannot tag: {mask(url, repo.secrets())} is not a standard svn layout "
                "(the service URL must end in /trunk, with tags/ next to it)"
            )
        tag_url = f"{url[: -len('/trunk')]}/tags/{name}"
        log = await self._svn(
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
        res = await self._svn(
            repo, "copy", "-m", f"Fornax version {name}", "--", f"{url}@{commit}", tag_url, on_line=on_line
        )
        if res.code != 0:
            raise VcsError(f"svn copy to tags/{name} failed: {_last(res.out, repo)}")


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
