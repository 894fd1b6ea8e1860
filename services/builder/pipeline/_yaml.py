"""YAML to plain data plus a line number for every key path (PyYAML node tree, safe tags only).

The node tree keeps an alias as a second reference to its anchor's node, so ten nested lists of ten
aliases are ~200 bytes of text but 10**10 values once converted: the conversion counts every value
it produces (aliases included) against `max_nodes`, and checks a deadline as it goes.
"""

from __future__ import annotations

import time
from typing import Any

import yaml

Path_ = tuple[str | int, ...]
# libyaml composes ~10x faster than the pure-Python parser (a 256 KiB file in well under a second).
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlSyntaxError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class YamlTooLarge(YamlSyntaxError):
    """The document expands past the node budget or takes longer than its time limit."""


class _Budget:
    def __init__(self, max_nodes: int, deadline: float | None) -> None:
        self.left = max_nodes
        self.max_nodes = max_nodes
        self.deadline = deadline

    def take(self, node: yaml.Node) -> None:
        self.left -= 1
        if self.left < 0:
            raise YamlTooLarge(node.start_mark.line + 1,
                               f"more than {self.max_nodes} values once aliases are expanded "
                               f"(limit config_max_nodes; at line {node.start_mark.line + 1})")
        if self.deadline is not None and self.left % 1024 == 0 and time.monotonic() > self.deadline:
            raise YamlTooLarge(node.start_mark.line + 1, "parsing took longer than the time limit "
                               "(config_parse_timeout)")


def load_with_lines(
    text: str, *, max_nodes: int = 10_000, deadline: float | None = None
) -> tuple[Any, dict[Path_, int]]:
    """Parse one YAML document; returns (data, {key path: 1-based line of that key or item}).
    YamlTooLarge past `max_nodes` values (aliases counted each time) or the `deadline` (monotonic)."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except RecursionError:
        raise YamlTooLarge(1, "nested too deeply") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlSyntaxError(line, f"invalid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, f"invalid YAML: {exc}") from exc
    lines: dict[Path_, int] = {(): 1}
    if node is None:
        return None, lines
    try:
        return _convert(node, (), lines, _Budget(max_nodes, deadline)), lines
    except RecursionError:
        raise YamlTooLarge(1, "nested too deeply") from None


def _convert(node: yaml.Node, path: Path_, lines: dict[Path_, int], budget: _Budget) -> Any:
    budget.take(node)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlSyntaxError(key_node.start_mark.line + 1, "YAML merge keys (<<) are not supported")
            key = _convert(key_node, path, lines, budget)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise YamlSyntaxError(key_node.start_mark.line + 1, "mapping keys must be plain scalars")
            key = str(key)
            child = (*path, key)
            if key in out:
                raise YamlSyntaxError(key_node.start_mark.line + 1, f"{_dotted(child)}: duplicate key")
            lines[child] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, child, lines, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            items.append(_convert(item, (*path, i), lines, budget))
        return items
    # Scalars: let the safe constructor resolve ints, bools, nulls, timestamps ...
    try:
        return yaml.SafeLoader("").construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", exc)
        raise YamlSyntaxError(node.start_mark.line + 1, f"{_dotted(path)}: {problem}") from exc


def _dotted(path: Path_) -> str:
    parts: list[str] = []
    for p in path:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + p)
    return "".join(parts) or "(top level)"


def line_of(lines: dict[Path_, int], path: Path_) -> int:
    """The line of the longest known prefix of `path` (a missing key points at its parent)."""
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return 1


dotted = _dotted
