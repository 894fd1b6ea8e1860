"""`fornax service|version|deploy|rollback|history|token`: the REST API from a terminal.

Every command takes --url ($FORNAX_URL, default http://127.0.0.1:7099), --token ($FORNAX_TOKEN) and
--user ($FORNAX_USER; by default the token's own user), prints a table for people or JSON with --json, and
exits 0 on success, 3 when the server refused (bad token, unknown or someone else's resource, invalid input:
the message names the field), 4 when it could not be reached or failed, 64 on bad usage; `version create
--follow` exits as `fornax logs` does (0 success, 1 failed, 2 cancelled).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from .api import OK, REFUSED, USAGE, ApiFailure, Client

Handler = Callable[[Client, argparse.Namespace], int]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="gateway URL (default: $FORNAX_URL or http://127.0.0.1:7099)")
    p.add_argument("--token", help="API token (default: $FORNAX_TOKEN)")
    p.add_argument("--user", help="user id (default: $FORNAX_USER, else the token's user)")
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], out: Any = None) -> None:
    """Rows as an aligned text table; missing values print as '-'."""
    out = out or sys.stdout
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)
    if not rows:
        print("(none)", file=out)


def _cell(v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _show(obj: dict[str, Any], as_json: bool, keys: Sequence[str] | None = None) -> None:
    if as_json:
        print(json.dumps(obj, indent=2, sort_keys=True))
        return
    for k in keys or sorted(obj):
        if k in obj and k != "stages":
            print(f"{k + ':':16} {_cell(obj[k])}")
    if obj.get("stages"):
        print("stages:")
        table(obj["stages"], ("name", "status", "start", "end", "error"))


# -- services -------------------------------------------------------------------------------------------
def service_create(c: Client, a: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": a.name, "description": a.description,
                            "repository": {"url": a.repo, "vcs": a.vcs}}
    if a.username:
        body["repository"]["username"] = a.username
    if a.password_stdin:
        body["repository"]["password"] = sys.stdin.readline().rstrip("\n")
    if a.config_file:
        body["config_file"] = a.config_file
    if a.public:
        body["public"] = True
    if a.secret:
        body["secrets"] = dict(_pair(s, "--secret") for s in a.secret)
    created = c.request("POST", c.path("services"), json=body)
    service = c.wait_readable(f"services/{created['service_id']}")
    if a.json:
        print(json.dumps({**service, "webhook_secret": created.get("webhook_secret")}, indent=2, sort_keys=True))
    else:
        print(f"created service {a.name} ({created['service_id']})")
        print(f"webhook secret (shown only now): {created.get('webhook_secret')}")
    return OK


def service_list(c: Client, a: argparse.Namespace) -> int:
    services = c.request("GET", c.path("services"), params={"limit": 500})["services"]
    if a.json:
        print(json.dumps(services, indent=2, sort_keys=True))
    else:
        rows = [{**s, "url": (s.get("repository") or {}).get("url")} for s in services]
        table(rows, ("service_id", "name", "status", "url", "public"))
    return OK


def service_show(c: Client, a: argparse.Namespace) -> int:
    service = c.request("GET", c.path(f"services/{c.service_id(a.service)}"))
    _show(service, a.json)
    return OK


def service_delete(c: Client, a: argparse.Namespace) -> int:
    sid = c.service_id(a.service)
    out = c.request("DELETE", c.path(f"services/{sid}"))
    print(json.dumps(out) if a.json else f"deleted service {a.service} ({sid})")
    return OK


# -- versions -------------------------------------------------------------------------------------------
def version_create(c: Client, a: argparse.Namespace) -> int:
    body: dict[str, Any] = {"service_id": c.service_id(a.service), "name": a.name, "description": a.description}
    if a.commit:
        body["commit"] = a.commit
    if a.operations:
        body["operations"] = [o.strip() for o in a.operations.split(",") if o.strip()]
    created = c.request("POST", c.path("versions"), json=body)
    vid = created["version_id"]
    if a.json and not a.follow:
        print(json.dumps(c.wait_readable(f"versions/{vid}"), indent=2, sort_keys=True))
    else:
        print(f"requested version {a.name} ({vid})", file=sys.stderr if a.follow else sys.stdout)
    if not a.follow:
        return OK
    c.wait_readable(f"versions/{vid}")  # a create may answer before the read model shows the version
    from .follow import follow

    return asyncio.run(follow(_logstream_url(c, a), vid, c.token, 0, as_json=a.json))


def _logstream_url(c: Client, a: argparse.Namespace) -> str:
    """--logstream, else $FORNAX_LOGSTREAM_URL, else port 8000 on the gateway's host."""
    explicit = a.logstream or os.environ.get("FORNAX_LOGSTREAM_URL")
    if explicit:
        return str(explicit)
    url = urlsplit(c.url)
    return f"{'wss' if url.scheme == 'https' else 'ws'}://{url.hostname}:8000"


def version_list(c: Client, a: argparse.Namespace) -> int:
    sid = c.service_id(a.service)
    versions = c.request("GET", c.path(f"services/{sid}/versions"), params={"limit": a.limit})["versions"]
    if a.json:
        print(json.dumps(versions, indent=2, sort_keys=True))
    else:
        table(versions, ("version_id", "name", "status", "trigger", "branch", "commit", "created_at"))
    return OK


def version_show(c: Client, a: argparse.Namespace) -> int:
    _show(c.request("GET", c.path(f"versions/{a.version_id}")), a.json)
    return OK


def version_cancel(c: Client, a: argparse.Namespace) -> int:
    out = c.request("POST", c.path(f"versions/{a.version_id}/cancel"))
    print(json.dumps(out) if a.json else f"cancelling version {a.version_id}")
    return OK


# -- deploys --------------------------------------------------------------------------------------------
def deploy(c: Client, a: argparse.Namespace) -> int:
    sid = c.service_id(a.service)
    body: dict[str, Any] = {"version_id": a.version_id, "target": a.target}
    if a.namespace:
        body["namespace"] = a.namespace
    if a.application:
        body["application"] = a.application
    out = c.request("POST", c.path(f"services/{sid}/deploy"), json=body)
    return _deployment_outcome(c, a, sid, out["deployment_id"])


def rollback(c: Client, a: argparse.Namespace) -> int:
    sid = c.service_id(a.service)
    body: dict[str, Any] = {}
    if a.to:
        body["to_version_id"] = a.to
    if a.target:
        body["target"] = a.target
    out = c.request("POST", c.path(f"services/{sid}/rollback"), json=body)
    return _deployment_outcome(c, a, sid, out["deployment_id"])


def _deployment_outcome(c: Client, a: argparse.Namespace, sid: str, deployment_id: str) -> int:
    if not a.wait:
        print(json.dumps({"deployment_id": deployment_id}) if a.json else f"requested deployment {deployment_id}")
        return OK
    deadline = time.monotonic() + a.wait
    while True:
        found = next((d for d in c.request("GET", c.path(f"services/{sid}/deployments"),
                                           params={"limit": 100})["deployments"]
                      if d["deployment_id"] == deployment_id), None)
        status = (found or {}).get("status")
        if status in ("success", "failed", "skipped"):
            break
        if time.monotonic() > deadline:
            print(f"fornax: deployment {deployment_id} still {status or 'requested'} after {a.wait:.0f}s",
                  file=sys.stderr)
            return REFUSED
        if not a.json:
            print(f"deployment {deployment_id}: {status or 'requested'}…", file=sys.stderr)
        time.sleep(1.0)
    if a.json:
        print(json.dumps(found, indent=2, sort_keys=True))
    else:
        reason = f" ({found.get('reason')})" if found and found.get("reason") else ""
        print(f"deployment {deployment_id}: {status}{reason}")
    return OK if status == "success" else 1


def history(c: Client, a: argparse.Namespace) -> int:
    sid = c.service_id(a.service)
    out = c.request("GET", c.path(f"services/{sid}/deployments"), params={"limit": a.limit})
    if a.json:
        print(json.dumps(out, indent=2, sort_keys=True))
        return OK
    table(out["deployments"], ("deployment_id", "kind", "status", "target", "version_name", "requested_at",
                               "reason"))
    if out.get("targets"):
        print()
        table(out["targets"], ("target", "current_version_id", "pinned", "pin_reason"))
    return OK


# -- token ----------------------------------------------------------------------------------------------
def token_rotate(c: Client, a: argparse.Namespace) -> int:
    out = c.request("POST", c.path("token/rotate"))
    if a.json:
        print(json.dumps(out))
    else:
        print("new API token (shown only once; the old one no longer works):")
        print(out["token"])
    return OK


def token_revoke(c: Client, a: argparse.Namespace) -> int:
    out = c.request("POST", c.path("token/revoke"))
    print(json.dumps(out) if a.json else f"token of {out['user_id']} revoked (an admin issues a new one: "
                                         "fornax user token NAME)")
    return OK


def _pair(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ApiFailure(f"{flag}: expected KEY=VALUE, got {text!r}", USAGE)
    return key, value


# -- parsers --------------------------------------------------------------------------------------------
def _service_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fornax service", description="create, list, show and delete services")
    sub = p.add_subparsers(dest="command", required=True)
    cr = sub.add_parser("create", help="create a service for a repository")
    cr.add_argument("name")
    cr.add_argument("--repo", required=True, help="repository URL")
    cr.add_argument("--vcs", default="git", choices=("git", "svn"))
    cr.add_argument("--username")
    cr.add_argument("--password-stdin", action="store_true", help="read the repository password from stdin")
    cr.add_argument("--description", default="")
    cr.add_argument("--config-file")
    cr.add_argument("--public", action="store_true", help="its badge is readable without a token")
    cr.add_argument("--secret", action="append", metavar="KEY=VALUE", help="a build secret (repeatable)")
    cr.set_defaults(handler=service_create)
    sub.add_parser("list", help="your services").set_defaults(handler=service_list)
    for name, handler, text in (("show", service_show, "one service"), ("delete", service_delete, "delete one")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("service", help="service name or id")
        sp.set_defaults(handler=handler)
    for sp in sub.choices.values():
        _common(sp)
    return p


def _version_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fornax version", description="request, list, show and cancel versions")
    sub = p.add_subparsers(dest="command", required=True)
    cr = sub.add_parser("create", help="build a version of a service")
    cr.add_argument("service", help="service name or id")
    cr.add_argument("name", help="version name, e.g. v1.2.0 (also the git tag)")
    cr.add_argument("--commit")
    cr.add_argument("--description", default="")
    cr.add_argument("--operations", help="comma-separated: integration,publish,deploy")
    cr.add_argument("--follow", "-f", action="store_true", help="follow its log until it ends")
    cr.add_argument("--logstream", help="logstream URL for --follow (default: $FORNAX_LOGSTREAM_URL or :8000)")
    cr.set_defaults(handler=version_create)
    ls = sub.add_parser("list", help="a service's versions, newest first")
    ls.add_argument("service")
    ls.add_argument("--limit", type=int, default=20)
    ls.set_defaults(handler=version_list)
    for name, handler, text in (("show", version_show, "one version with its stages"),
                                ("cancel", version_cancel, "cancel a pending or running version")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("version_id")
        sp.set_defaults(handler=handler)
    for sp in sub.choices.values():
        _common(sp)
    return p


def _deploy_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fornax deploy", description="deploy a successful version to a target")
    p.add_argument("service")
    p.add_argument("version_id")
    p.add_argument("--target", required=True)
    p.add_argument("--namespace")
    p.add_argument("--application")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait for the outcome")
    _common(p)
    p.set_defaults(handler=deploy)
    return p


def _rollback_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fornax rollback",
                                description="roll back to the previous (or a given) version; pins the target")
    p.add_argument("service")
    p.add_argument("--to", metavar="VERSION_ID")
    p.add_argument("--target")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait for the outcome")
    _common(p)
    p.set_defaults(handler=rollback)
    return p


def _history_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fornax history", description="a service's deploy history and targets")
    p.add_argument("service")
    p.add_argument("--limit", type=int, default=20)
    _common(p)
    p.set_defaults(handler=history)
    return p


def _token_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fornax token", description="rotate or revoke your API token")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("rotate", help="get a new token; the old one stops working").set_defaults(handler=token_rotate)
    sub.add_parser("revoke", help="revoke your token").set_defaults(handler=token_revoke)
    for sp in sub.choices.values():
        _common(sp)
    return p


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return OK if exc.code == 0 else USAGE
    try:
        client = Client.from_args(args.url, args.token, args.user, progress=not args.json)
        return int(args.handler(client, args))
    except ApiFailure as exc:
        print(f"fornax: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


def service_main(argv: list[str] | None = None) -> int:
    return run(_service_parser(), argv)


def version_main(argv: list[str] | None = None) -> int:
    return run(_version_parser(), argv)


def deploy_main(argv: list[str] | None = None) -> int:
    return run(_deploy_parser(), argv)


def rollback_main(argv: list[str] | None = None) -> int:
    return run(_rollback_parser(), argv)


def history_main(argv: list[str] | None = None) -> int:
    return run(_history_parser(), argv)


def token_main(argv: list[str] | None = None) -> int:
    return run(_token_parser(), argv)
