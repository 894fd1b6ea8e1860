"""Loading the config file: finding it in the workspace, YAML with line numbers, the size / node / time
limits, and one ConfigError naming the file, the line and the key path."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ._yaml import YamlSyntaxError, YamlTooLarge, dotted, line_of, load_with_lines
from .config import ConfigError, PipelineConfig

CONFIG_FILES = ("fornax.yml", "caicloud.yml")


def _msg(err: Any) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "too_short":
        return "must not be empty"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


def parse_config(
    text: str, name: str = "fornax.yml", *, max_nodes: int = 10_000, deadline: float | None = None
) -> PipelineConfig:
    """Parse config text; ConfigError('<name> line N: <key.path>: <problem>') on any problem, and
    ConfigError('<name>: <what was exceeded>') past `max_nodes` values or the `deadline` (monotonic)."""
    try:
        data, lines = load_with_lines(text, max_nodes=max_nodes, deadline=deadline)
    except YamlTooLarge as exc:
        raise ConfigError(f"{name}: {exc.message}", file=name, line=exc.line) from None
    except YamlSyntaxError as exc:
        raise ConfigError(f"{name} line {exc.line}: {exc.message}", file=name, line=exc.line) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name} line 1: the top level must be a mapping of stages", file=name, line=1)
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        # Report one problem: an unknown key first (usually a typo that also explains a "missing"
        # one), else the first by line.
        errors = [(tuple(err["loc"]), err) for err in exc.errors()]
        loc, err = min(errors, key=lambda e: (e[1]["type"] != "extra_forbidden", line_of(lines, e[0])))
        line = line_of(lines, loc)
        key = dotted(loc)
        raise ConfigError(f"{name} line {line}: {key}: {_msg(err)}", file=name, line=line, key=key) from None
    config._source = name
    return config


def load_config(
    workspace: Path,
    configured_name: str | None = None,
    *,
    max_bytes: int = 256 * 1024,
    max_nodes: int = 10_000,
    deadline: float | None = None,
) -> PipelineConfig:
    """Read `configured_name`, else fornax.yml, else caicloud.yml; none of them → the default config.
    A file over `max_bytes` is refused before it is read."""
    root = Path(workspace).resolve()
    names = list(dict.fromkeys([n for n in (configured_name, *CONFIG_FILES) if n]))
    for name in names:
        path = (root / name).resolve()
        if root not in path.parents:
            raise ConfigError(f"{name} line 1: the config file escapes the workspace", file=name, line=1)
        if path.is_file():
            with path.open("rb") as f:
                raw = f.read(max_bytes + 1)
            if len(raw) > max_bytes:
                raise ConfigError(f"{name}: the file is larger than {max_bytes} bytes (limit config_max_bytes)",
                                  file=name, line=1)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{name} line 1: the file is not UTF-8 text", file=name, line=1) from None
            return parse_config(text, name, max_nodes=max_nodes, deadline=deadline)
    return PipelineConfig()


async def read_config(workspace: Path, configured_name: str | None, settings: Any) -> PipelineConfig:
    """load_config with the limits from settings, off the event loop: a hostile file (an alias bomb,
    a huge or deeply nested document) fails with a ConfigError naming the limit, in bounded time."""
    timeout = float(settings.config_parse_timeout)
    deadline = time.monotonic() + timeout
    work = asyncio.to_thread(load_config, workspace, configured_name, max_bytes=settings.config_max_bytes,
                             max_nodes=settings.config_max_nodes, deadline=deadline)
    try:
        # The parse itself checks the deadline; the extra second covers a stall outside the checks.
        return await asyncio.wait_for(work, timeout + 1.0)
    except TimeoutError:
        name = configured_name or CONFIG_FILES[0]
        raise ConfigError(f"{name}: parsing took longer than {timeout:g}s (limit config_parse_timeout)",
                          file=name, line=1) from None
