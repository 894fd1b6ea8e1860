"""Which repository URLs a service may name: an allow-list of schemes, local repositories (file:// URLs
and paths) only where the operator enables them, and never credentials inside the URL.

The gateway checks a URL when a service is created or updated; the builder checks it again before
every probe, clone and tag, so a URL stored before the policy changed cannot be used either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_SCHEMES = ("https", "ssh", "git", "svn", "svn+ssh")
URL_FIELD = "repository.url"
# Schemes whose user part is a login (`ssh://git@host/r.git`), not a secret. For the others (https
# above all) a user part is where tokens get pasted (`https://<token>@host/r.git`).
_LOGIN_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git", "svn+ssh"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TRANSPORT = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)::")  # git's `<transport>::<address>` (ext::, fd::)
# git's scp-like syntax `[user@]host:path` (ssh), as git tells it from a local path: a colon before
# any slash.
_SCP = re.compile(r"^(?:(?P<user>[^@/]+)@)?(?P<host>[^@/:]+):(?!//)")


class RepoUrlRefused(ValueError):
    """The URL is not allowed; the message names the field and says what to do instead."""

    def __init__(self, message: str, field: str = URL_FIELD) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class RepoUrl:
    scheme: str  # lower case; "file" for file:// URLs and local paths, "ssh" for scp-like
    local: bool
    username: str | None
    has_password: bool


def parse_repo_url(url: str) -> RepoUrl:
    """How git and svn read `url`: its scheme (`file` for a local path) and user part."""
    m = _SCHEME.match(url)
    if m:
        scheme = m.group(1).lower()
        try:
            parts = urlsplit(url)
            username, password = parts.username, parts.password
        except ValueError:
            raise RepoUrlRefused(f"{URL_FIELD}: not a valid URL") from None
        return RepoUrl(scheme, scheme == "file", username or None, password is not None)
    m = _TRANSPORT.match(url)
    if m:
        return RepoUrl(m.group(1).lower(), False, None, False)
    m = _SCP.match(url)
    if m and not url.startswith(("/", ".", "~")):
        user = m.group("user")
        if user and ":" in user:
            return RepoUrl("ssh", False, user.partition(":")[0] or None, True)
        return RepoUrl("ssh", False, user, False)
    return RepoUrl("file", True, None, False)


def check_repo_url(url: str, *, schemes: Iterable[str], allow_local: bool) -> None:
    """Raise RepoUrlRefused unless `url` is allowed by the operator's policy."""
    allowed = [s.lower() for s in schemes]
    parsed = parse_repo_url(url)
    if parsed.has_password or (parsed.username and parsed.scheme not in _LOGIN_SCHEMES):
        raise RepoUrlRefused(
            f"{URL_FIELD} must not contain credentials: give the user name in repository.username "
            "and the password or token in repository.password (or repository.token)"
        )
    if parsed.local:
        if not allow_local:
            raise RepoUrlRefused(
                f"{URL_FIELD}: local repositories (file:// URLs and paths) are not allowed on this "
                f"server; use a URL with one of the schemes {', '.join(allowed) or '(none allowed)'}"
            )
        return
    if parsed.scheme not in allowed:
        raise RepoUrlRefused(
            f"{URL_FIELD}: the scheme {parsed.scheme!r} is not allowed on this server; "
            f"use one of {', '.join(allowed) or '(none allowed)'}"
        )


def redact_credentials(url: str) -> str:
    """`url` with any secret in its user part replaced by ****: for showing a URL stored before the
    policy refused credentials (an ssh login stays, a password or an https user part does not)."""
    m = _SCHEME.match(url)
    if not m or "@" not in url[m.end() :].split("/", 1)[0]:
        return url
    authority, slash, rest = url[m.end() :].partition("/")
    userinfo, _, host = authority.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if m.group(1).lower() in _LOGIN_SCHEMES:
        userinfo = f"{user}:****" if colon else user
    else:
        userinfo = "****"
    return f"{url[: m.end()]}{userinfo}@{host}{slash}{rest}"
