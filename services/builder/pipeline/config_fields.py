"""Field values of the config file: environment maps, repository paths, `volumes` items, and the seed's
(Fornax 2016) spellings `env` / `command`."""

from __future__ import annotations

import posixpath
import re
from typing import Any

from pydantic import AliasChoices

WORKSPACE_MOUNT = "/workspace"  # where the repository is bind-mounted in every step container
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _scalar_text(v: Any) -> Any:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v) if isinstance(v, int | float) else v


def _environment(value: Any) -> dict[str, str]:
    """`[KEY=value, ...]` or `{KEY: value}` → dict; scalar map values become strings."""
    value = _refused(value)
    if value is None:
        return {}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not _ENV_KEY.match(str(k)):
                raise ValueError(f"invalid variable name {k!r}")
            if isinstance(v, dict | list):
                raise ValueError(f"value of {k} must be a scalar")
            out[str(k)] = "" if v is None else str(_scalar_text(v))
        return out
    if isinstance(value, list):
        out = {}
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(f"items must be KEY=value strings, got {item!r}")
            k, _, v = item.partition("=")
            if not _ENV_KEY.match(k):
                raise ValueError(f"invalid variable name {k!r}")
            out[k] = v
        return out
    raise ValueError("must be a list of KEY=value or a mapping")


def _inside(path: str, what: str) -> str:
    """Normalise a repository path; refuse anything that leaves the workspace."""
    if not path.strip():
        raise ValueError(f"{what} must not be empty")
    norm = posixpath.normpath(path)
    if norm.startswith("/"):
        if norm == WORKSPACE_MOUNT or norm.startswith(WORKSPACE_MOUNT + "/"):
            norm = posixpath.relpath(norm, WORKSPACE_MOUNT)
        else:
            raise ValueError(f"{path!r} escapes the workspace (absolute paths must be under "
                             f"{WORKSPACE_MOUNT})")
    if norm == ".." or norm.startswith("../"):
        raise ValueError(f"{path!r} escapes the workspace")
    return norm


# -- The seed's spellings (caicloud.yml of Fornax 2016): `env`, `command`, `volumes` ------------------
_ENV_ALIASES = AliasChoices("environment", "env")
_COMMANDS_ALIASES = AliasChoices("commands", "command")
_NO_MOUNT = ("/proc", "/sys", "/dev")


class _Refused:
    """Put in place of a seed-spelled key's value to fail with `message` at that key's line."""

    def __init__(self, message: str) -> None:
        self.message = message


def _refused(v: Any) -> Any:
    if isinstance(v, _Refused):
        raise ValueError(v.message)
    return v


def _seed_spellings(data: Any) -> Any:
    """`env` is `environment`; `command: <one command>` is `commands: [<it>]` (one of each pair)."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for seed, ours in (("env", "environment"), ("command", "commands")):
        if seed in data and ours in data:
            del data[ours]
            data[seed] = _Refused(f"`{seed}` and `{ours}` are the same key: give only one")
    one = data.get("command")
    if isinstance(one, dict | list):
        data["command"] = _Refused("`command` is one command (a string); use `commands` for a list")
    elif "command" in data and not isinstance(one, _Refused):
        data["command"] = None if one is None else [_scalar_text(one)]
    return data


def _volume(item: Any) -> tuple[str, str, str]:
    """One `volumes` item → (workspace-relative source, absolute container path, mode).

    `<container path>`: the repository (the workspace) is also mounted there — the seed's form, e.g.
    `../go/src/github.com/u/repo` to put the code under GOPATH; relative paths are relative to the
    working directory /workspace. `<workspace path>:<container path>[:ro|rw]`: that directory of the
    repository is mounted there. Only the workspace can be mounted: a host path outside it is refused.
    """
    if not isinstance(item, str) or not item.strip():
        raise ValueError(f"items must be `<container path>` or `<workspace path>:<container path>`, "
                         f"got {item!r}")
    parts = item.split(":")
    mode = "rw"
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        mode = parts.pop()
    if len(parts) == 1:
        source, target = ".", parts[0]
    elif len(parts) == 2:
        source, target = parts
        try:
            source = _inside(source, "volume source")
        except ValueError:
            raise ValueError(f"{item!r}: only paths inside the workspace can be mounted "
                             f"({source!r} is not)") from None
    else:
        raise ValueError(f"{item!r}: expected `<container path>` or `<workspace path>:<container path>`")
    if not target.strip():
        raise ValueError(f"{item!r}: the container path is empty")
    target = posixpath.normpath(posixpath.join(WORKSPACE_MOUNT, target))
    if target == "/" or target == WORKSPACE_MOUNT or target.startswith(WORKSPACE_MOUNT + "/"):
        raise ValueError(f"{item!r}: cannot mount over {target}")
    if any(target == p or target.startswith(p + "/") for p in _NO_MOUNT):
        raise ValueError(f"{item!r}: cannot mount over {target}")
    return source, target, mode
