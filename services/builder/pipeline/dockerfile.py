"""Every image a Dockerfile names, with its line: `FROM`, `COPY --from`, `RUN --mount=from=`, and the
same inside `ONBUILD`. Pure: no Docker, no files.

It follows the Dockerfile reference closely enough to be safe rather than complete: parser directives
(`escape`), line continuations and comments, `ARG` before the first `FROM` (global, with defaults and
build args, the only scope a `FROM` line sees), `ARG`/`ENV` inside a stage, `${VAR}`, `${VAR:-word}`,
`${VAR:+word}` (and the forms without the colon), quotes and escapes; `FROM … AS name` and numeric
stage indexes, so `FROM name` or `COPY --from=name` after that stage names no image. Where Docker
would see a value this parser cannot know (a variable the base image's ENV may set, a variable form
it does not model), it raises `DockerfileError` naming the line instead of guessing.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")


class DockerfileError(ValueError):
    """The Dockerfile cannot be checked; the message names the line."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class ImageUse:
    """An image the build would read: the reference after substitution, the line, the instruction."""

    image: str
    line: int
    instruction: str


class _Unknown(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _logical_lines(text: str) -> tuple[str, list[tuple[int, str]]]:
    """The escape character and the instructions as (first line number, joined text)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    escape = "\\"
    i = 0
    seen: set[str] = set()
    while i < len(lines):  # parser directives: only at the very top, each once
        m = _DIRECTIVE.match(lines[i].strip())
        if not m or m.group(1).lower() in seen:
            break
        seen.add(m.group(1).lower())
        if m.group(1).lower() == "escape":
            if m.group(2) not in ("\\", "`"):
                raise DockerfileError(f"invalid escape directive {m.group(2)!r}", i + 1)
            escape = m.group(2)
        i += 1
    out: list[tuple[int, str]] = []
    start = 0
    parts: list[str] = []
    for n in range(i, len(lines)):
        raw = lines[n]
        stripped = raw.strip()
        if stripped.startswith("#"):  # comments vanish, even inside a continued instruction
            continue
        if not parts and not stripped:
            continue
        if not parts:
            start = n + 1
        body = raw.rstrip()
        if body.endswith(escape):  # Docker: the escape character, then only blanks, continues
            parts.append(body[: -len(escape)])
            continue
        parts.append(raw)
        out.append((start, "".join(parts).strip()))
        parts = []
    if parts:
        out.append((start, "".join(parts).strip()))
    return escape, out


def expand(word: str, env: Mapping[str, str], escape: str = "\\", *, strict: bool) -> str:
    """Docker's word processing: quotes removed, escapes honoured, variables substituted. A variable
    missing from `env` is empty when not `strict`, else `_Unknown`."""
    out: list[str] = []
    i, n = 0, len(word)
    quote = ""
    while i < n:
        c = word[i]
        if c == escape and quote != "'" and i + 1 < n:
            out.append(word[i + 1])
            i += 2
            continue
        if c in "'\"":
            if not quote:
                quote = c
                i += 1
                continue
            if quote == c:
                quote = ""
                i += 1
                continue
        if c == "$" and quote != "'":
            value, i = _dollar(word, i + 1, env, escape, strict)
            out.append(value)
            continue
        out.append(c)
        i += 1
    if quote:
        raise ValueError(f"unclosed quote in {word!r}")
    return "".join(out)


def _lookup(name: str, env: Mapping[str, str], strict: bool) -> str | None:
    if name in env:
        return env[name]
    if strict:
        raise _Unknown(name)
    return None


def _dollar(word: str, i: int, env: Mapping[str, str], escape: str, strict: bool) -> tuple[str, int]:
    if i < len(word) and word[i] == "{":
        end = _closing_brace(word, i + 1)
        inner = word[i + 1 : end]
        m = _NAME.match(inner)
        if not m:
            raise ValueError(f"unsupported variable ${{{inner}}}")
        name, rest = m.group(0), inner[m.end() :]
        if not rest:
            return _lookup(name, env, strict) or "", end + 1
        for op in (":-", ":+", "-", "+"):
            if rest.startswith(op):
                arg = rest[len(op) :]
                value = env.get(name)
                present = value is not None and (value != "" or ":" not in op)
                if "-" in op:
                    return (value if present else expand(arg, env, escape, strict=strict)) or "", end + 1
                return (expand(arg, env, escape, strict=strict) if present else ""), end + 1
        raise ValueError(f"unsupported variable form ${{{inner}}}")
    m = _NAME.match(word, i)
    if not m:
        return "$", i
    return _lookup(m.group(0), env, strict) or "", m.end()


def _closing_brace(word: str, start: int) -> int:
    depth = 1
    for j in range(start, len(word)):
        if word[j] == "{":
            depth += 1
        elif word[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unclosed ${{ in {word!r}")


def _split_flags(args: str) -> tuple[list[str], str]:
    """Leading `--flag[=value]` words and the rest of the arguments."""
    flags: list[str] = []
    rest = args.lstrip()
    while rest.startswith("--"):
        m = re.match(r"(\S+)\s*", rest)
        assert m is not None
        flags.append(m.group(1))
        rest = rest[m.end() :]
    return flags, rest


def _assignments(args: str, line: int) -> list[tuple[str, str | None]]:
    """`NAME[=value] ...` (ARG, ENV) as pairs; the old `ENV NAME value` form too."""
    try:
        words = shlex.split(args, posix=False)
    except ValueError as exc:
        raise DockerfileError(str(exc), line) from None
    if words and "=" not in words[0] and len(words) > 1:
        return [(words[0], args.split(None, 1)[1])]  # ENV NAME value with spaces
    out: list[tuple[str, str | None]] = []
    for w in words:
        name, eq, value = w.partition("=")
        out.append((name, value if eq else None))
    return out


class _Scan:
    def __init__(self, build_args: Mapping[str, str], escape: str) -> None:
        self.build_args = dict(build_args)
        self.escape = escape
        self.globals: dict[str, str] = {}  # ARGs before the first FROM (with build args applied)
        self.declared_globals: set[str] = set()
        self.stage_env: dict[str, str] | None = None  # None: before the first FROM
        self.stages: list[str | None] = []  # stage names (lower case) in order
        self.uses: list[ImageUse] = []

    # -- variable scopes -----------------------------------------------------------------------
    def word(self, value: str, line: int, *, strict: bool, what: str) -> str:
        env = self.globals if self.stage_env is None or not strict else self.stage_env
        try:
            return expand(value, env, self.escape, strict=strict)
        except _Unknown as exc:
            raise DockerfileError(
                f"{what} {value!r} uses ${exc.name}, which is not an ARG or ENV set in this "
                "Dockerfile; name the image literally", line
            ) from None
        except ValueError as exc:
            raise DockerfileError(f"{what}: {exc}", line) from None

    def arg(self, args: str, line: int) -> None:
        for name, default in _assignments(args, line):
            if not _NAME.fullmatch(name):
                raise DockerfileError(f"invalid ARG name {name!r}", line)
            if self.stage_env is None:
                value = self.build_args.get(name)
                if value is None:
                    value = "" if default is None else self.word(default, line, strict=False, what="ARG")
                self.globals[name] = value
                self.declared_globals.add(name)
            else:
                value = self.build_args.get(name)
                if value is None and default is not None:
                    value = self.word(default, line, strict=True, what="ARG")
                if value is None:
                    value = self.globals.get(name, "")
                self.stage_env[name] = value

    def env(self, args: str, line: int) -> None:
        if self.stage_env is None:
            raise DockerfileError("ENV before the first FROM", line)
        for name, value in _assignments(args, line):
            if value is None:
                raise DockerfileError(f"ENV {name} has no value", line)
            self.stage_env[name] = self.word(value, line, strict=True, what="ENV")

    # -- image references ----------------------------------------------------------------------
    def from_(self, args: str, line: int) -> None:
        _, rest = _split_flags(args)
        words = rest.split()
        if not words:
            raise DockerfileError("FROM names no image", line)
        alias = None
        if len(words) == 3 and words[1].lower() == "as":
            alias = words[2].lower()
            if not _STAGE_NAME.match(alias):
                raise DockerfileError(f"invalid stage name {words[2]!r}", line)
        elif len(words) != 1:
            raise DockerfileError("FROM takes an image and optionally `AS <name>`", line)
        image = self.word(words[0], line, strict=False, what="FROM")
        if not image:
            raise DockerfileError(f"FROM {words[0]!r} names no image once its variables are substituted", line)
        if image.lower() not in self.stages and image.lower() != "scratch":
            self.uses.append(ImageUse(image, line, "FROM"))
        self.stages.append(alias)
        # A stage sees the global ARGs only once it declares them again (values kept).
        self.stage_env = {}

    def source(self, value: str, line: int, instruction: str, *, onbuild: bool) -> None:
        """A `--from` value: a stage (name or index) of this Dockerfile, else an image."""
        if onbuild:
            # Expanded and resolved in whatever Dockerfile builds on this image: only a literal image.
            if "$" in value:
                raise DockerfileError(f"{instruction} {value!r}: variables cannot be checked here", line)
            ref = expand(value, {}, self.escape, strict=False)
        else:
            ref = self.word(value, line, strict=True, what=instruction)
        if not ref:
            raise DockerfileError(f"{instruction} names nothing", line)
        if not onbuild:
            if ref.isdigit() and int(ref) < len(self.stages):
                return
            if ref.lower() in self.stages:
                return
        self.uses.append(ImageUse(ref, line, instruction))

    def copy(self, args: str, line: int, *, onbuild: bool = False, label: str = "COPY") -> None:
        flags, _ = _split_flags(args)
        for flag in flags:
            if flag.startswith("--from="):
                self.source(flag[len("--from=") :], line, f"{label} --from", onbuild=onbuild)

    def run(self, args: str, line: int, *, onbuild: bool = False, label: str = "RUN") -> None:
        flags, _ = _split_flags(args)
        for flag in flags:
            if not flag.startswith("--mount="):
                continue
            try:  # the flag's own quotes go first, then the value is CSV
                spec = "".join(shlex.split(flag[len("--mount=") :]))
            except ValueError as exc:
                raise DockerfileError(f"{label} --mount: {exc}", line) from None
            for part in _csv(spec):
                key, _, value = part.partition("=")
                if key.strip().lower() == "from":
                    self.source(value.strip(), line, f"{label} --mount from", onbuild=onbuild)


def _csv(value: str) -> list[str]:
    """`a=b,"c=d,e"` → ['a=b', 'c=d,e'] (the --mount syntax is CSV)."""
    out: list[str] = []
    cur: list[str] = []
    quote = ""
    for c in value:
        if c in "'\"" and (not quote or quote == c):
            quote = "" if quote else c
            continue
        if c == "," and not quote:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(c)
    out.append("".join(cur))
    return out


def referenced_images(text: str, build_args: Mapping[str, str] | None = None) -> list[ImageUse]:
    """Every image the Dockerfile would read (not stages it builds itself), in order of lines."""
    escape, lines = _logical_lines(text)
    scan = _Scan(build_args or {}, escape)
    for line, instruction in lines:
        keyword, _, args = instruction.partition(" ")
        keyword = keyword.upper()
        if scan.stage_env is None and keyword not in ("ARG", "FROM"):
            raise DockerfileError(f"{keyword} before the first FROM", line)
        if keyword == "ARG":
            scan.arg(args, line)
        elif keyword == "ENV":
            scan.env(args, line)
        elif keyword == "FROM":
            scan.from_(args, line)
        elif keyword in ("COPY", "ADD"):
            scan.copy(args, line, label=keyword)
        elif keyword == "RUN":
            scan.run(args, line)
        elif keyword == "ONBUILD":
            inner, _, inner_args = args.strip().partition(" ")
            inner = inner.upper()
            if inner in ("COPY", "ADD"):
                scan.copy(inner_args, line, onbuild=True, label=f"ONBUILD {inner}")
            elif inner == "RUN":
                scan.run(inner_args, line, onbuild=True, label="ONBUILD RUN")
            elif inner in ("FROM", "ONBUILD"):
                raise DockerfileError(f"ONBUILD {inner} is not allowed", line)
    return scan.uses
