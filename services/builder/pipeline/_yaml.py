"""YAML to plain data plus a line number for every key path (PyYAML node tree, safe tags only)."""

from __future__ import annotations

from typing import Any

import yaml

Path_ = tuple[str | int, ...]


class YamlSyntaxError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def load_with_lines(text: str) -> tuple[Any, dict[Path_, int]]:
    """Parse one YAML document; returns (data, {key path: 1-based line of that key or item})."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlSyntaxError(line, f"invalid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, f"invalid YAML: {exc}") from exc
    lines: dict[Path_, int] = {(): 1}
    if node is None:
        return None, lines
    return _convert(node, (), lines), lines


def _convert(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlSyntaxError(key_node.start_mark.line + 1, "YAML merge keys (<<) are not supported")
            key = _convert(key_node, path, lines)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise YamlSyntaxError(key_node.start_mark.line + 1, "mapping keys must be plain scalars")
            key = str(key)
            child = (*path, key)
            if key in out:
                raise YamlSyntaxError(key_node.start_mark.line + 1, f"{_dotted(child)}: duplicate key")
            lines[child] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, child, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            items.append(_convert(item, (*path, i), lines))
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
