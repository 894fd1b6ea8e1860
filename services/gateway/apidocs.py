"""A self-contained HTML page (no external assets) rendered from the OpenAPI document."""

from __future__ import annotations

import json
from functools import lru_cache
from html import escape
from typing import Any

from .openapi import document

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:1.2rem 2rem}header h1{margin:0;font-size:1.5rem}
header p{margin:.4rem 0 0;color:#c9d1e0;max-width:60rem}
main{padding:1rem 2rem;max-width:72rem}
h2{margin-top:2rem;border-bottom:1px solid #d8dce3;text-transform:capitalize}
nav a{margin-right:1rem;color:#2b59c3}
details{background:#fff;border:1px solid #d8dce3;border-radius:6px;margin:.5rem 0}
summary{cursor:pointer;padding:.6rem .8rem;font-family:ui-monospace,monospace}
.m{display:inline-block;min-width:4.5rem;font-weight:700;text-align:center;border-radius:4px;color:#fff;
padding:.1rem .3rem;margin-right:.6rem}.get{background:#2f855a}.post{background:#2b59c3}
.put{background:#b7791f}
.delete{background:#c53030}.s{color:#5a6478;font-family:system-ui,sans-serif;margin-left:.6rem}
.body{padding:.2rem 1rem 1rem}table{border-collapse:collapse;margin:.4rem 0}
td,th{border:1px solid #e2e5ea;padding:.25rem .6rem;text-align:left;vertical-align:top}
pre{background:#f0f2f5;padding:.6rem;border-radius:4px;overflow:auto;font-size:.85rem}
"""


def _resolve(schema: dict[str, Any], doc: dict[str, Any], depth: int = 0) -> Any:
    if depth > 6:
        return "..."
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _resolve(doc["components"]["schemas"][name], doc, depth + 1)
    if "anyOf" in schema:  # (T | None: shown as T, nullable)
        choices = [c for c in schema["anyOf"] if c.get("type") != "null"]
        shown = _resolve(choices[0], doc, depth + 1) if len(choices) == 1 else "any"
        return f"{shown} | null" if len(choices) < len(schema["anyOf"]) and isinstance(shown, str) else shown
    if "properties" in schema:
        return {k: _resolve(v, doc, depth + 1) for k, v in schema["properties"].items()}
    if schema.get("type") == "array":
        return [_resolve(schema.get("items", {}), doc, depth + 1)]
    if "enum" in schema:
        return " | ".join(str(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    return schema.get("type", "any")


def _operation(path: str, method: str, op: dict[str, Any], doc: dict[str, Any]) -> str:
    parts = [
        f'<details><summary><span class="m {method}">{method.upper()}</span>{escape(path)}'
        f'<span class="s">{escape(op.get("summary", ""))}</span></summary><div class="body">'
    ]
    params = op.get("parameters") or []
    if params:
        rows = "".join(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
            f"<td>{escape(p.get('description', ''))}</td></tr>"
            for p in params
        )
        parts.append(f"<table><tr><th>parameter</th><th>in</th><th>meaning</th></tr>{rows}</table>")
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body:
        example = json.dumps(_resolve(body, doc), indent=2)
        parts.append(f"<p>Request body:</p><pre>{escape(example)}</pre>")
    statuses = []
    for status, resp in op.get("responses", {}).items():
        if "$ref" in resp:
            resp = doc["components"]["responses"][resp["$ref"].rsplit("/", 1)[-1]]
        statuses.append(f"<tr><td>{escape(status)}</td><td>{escape(resp.get('description', ''))}</td></tr>")
    parts.append(f"<table><tr><th>status</th><th>meaning</th></tr>{''.join(statuses)}</table>")
    auth = "none" if op.get("security") == [] else "<code>Authorization: Bearer &lt;token&gt;</code>"
    parts.append(f"<p>Authentication: {auth}</p></div></details>")
    return "".join(parts)


@lru_cache(maxsize=1)
def render() -> str:
    doc = document()
    groups: dict[str, list[str]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            tag = (op.get("tags") or ["other"])[0]
            groups.setdefault(tag, []).append(_operation(path, method, op, doc))
    nav = "".join(f'<a href="#{escape(t)}">{escape(t)}</a>' for t in groups)
    sections = "".join(f'<h2 id="{escape(t)}">{escape(t)}</h2>{"".join(ops)}' for t, ops in groups.items())
    error = json.dumps(_resolve({"$ref": "#/components/schemas/Error"}, doc), indent=2)
    info = doc["info"]
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(info['title'])} API</title>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(info['title'])} API {escape(info['version'])}</h1>"
        f"<p>{escape(info['description'])}</p></header><main><nav>{nav}"
        f'<a href="/openapi.json">openapi.json</a></nav>'
        f"<h2 id=errors>errors</h2><p>Every error has this shape:</p><pre>{escape(error)}</pre>{sections}"
        f"</main></body></html>"
    )
