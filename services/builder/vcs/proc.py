"""Subprocesses of the VCS clients: run one with secrets masked and a timeout, and make its output fit
for a message (secrets masked, host paths replaced)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from shared.logwriter import mask
from shared.repo_url import parse_repo_url

from . import OnLine, RepoSpec, VcsError


@dataclass
class Ran:
    code: int
    out: str


async def run_command(
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float | None = None,
    on_line: OnLine | None = None,
    secrets: list[str] | None = None,
    clean: Callable[[str], str] | None = None,
) -> Ran:
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
            part = shown(raw.decode("utf-8", "replace"))
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
    return Ran(proc.returncode or 0, "\n".join(lines))


def shown(line: str) -> str:
    """What a terminal shows of one output line: a progress meter (git's "Receiving objects:  42%")
    rewrites its line after each carriage return, and only the last state is kept. Each state as a log
    line of its own made a clone of a thousand objects log 400 lines; they arrived together with the
    line's newline, so the live view lost nothing."""
    return next((seg for seg in reversed(line.rstrip("\r\n").split("\r")) if seg.strip()), "")


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


def last_lines(out: str, repo: RepoSpec, n: int = 3) -> str:
    """The last lines of a failed command's output, fit for a message (host paths scrubbed)."""
    lines = [line for line in out.strip().splitlines() if not line.startswith(_BOILERPLATE)]
    return scrub(" / ".join(lines[-n:]), repo) or "no output"


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
