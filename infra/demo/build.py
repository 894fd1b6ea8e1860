"""`fornax demo`: build a sample repository end to end against the running local stack.

Steps: base image (busybox rootfs imported into Docker) → user `demo` (token kept under
settings.data_dir/demo/) → a bare git repository with a Dockerfile serving index.html with httpd →
the service, created through the gateway API → a commit → a signed GitHub push webhook → follow the
version to success → print image, digest and tag. Later steps (e.g. a deploy) plug in through
`AFTER_BUILD`: callables taking the `Demo` and returning an exit code or None.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.settings import Settings, get_settings

SERVICE = "demo-app"
DOCKERFILE = """FROM fornax/busybox:latest
COPY index.html /www/index.html
EXPOSE 8080
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
"""


@dataclass
class Demo:
    """What the demo made; steps in AFTER_BUILD get it (the deploy step in deploy.py uses it)."""

    settings: Settings
    http: httpx.Client
    user: str
    token: str
    repo_url: str
    service_id: str = ""
    version: dict[str, Any] = field(default_factory=dict)
    out: Callable[[str], None] = print
    service_name: str = SERVICE


def _deploy_to_local(demo: Demo) -> int | None:
    from .deploy import demo_step  # deploy to target `local`, probe the app on localhost

    return demo_step(demo)


AFTER_BUILD: list[Callable[[Demo], int | None]] = [_deploy_to_local]


def _sh(*argv: str, cwd: Path | None = None) -> str:
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout.strip()


def _user_and_token(settings: Settings, home: Path) -> tuple[str, str]:
    from shared.auth import UserExists, create_user, user_for_token
    from shared.store import Store

    saved = home / "token.json"
    store = Store(settings)
    try:
        store.ensure_indexes()
        if saved.exists():
            data = json.loads(saved.read_text())
            if user_for_token(store, data.get("token")) == data.get("user"):
                return data["user"], data["token"]
        for name in ("demo", f"demo-{uuid.uuid4().hex[:6]}"):
            try:
                token = create_user(store, name)
            except UserExists:
                continue
            saved.write_text(json.dumps({"user": name, "token": token}))
            saved.chmod(0o600)
            return name, token
        raise RuntimeError("could not create a demo user")
    finally:
        store.close()


def _repository(home: Path) -> tuple[Path, Path]:
    origin, work = home / "origin.git", home / "work"
    if not origin.exists():
        _sh("git", "init", "-q", "--bare", "-b", "main", str(origin))
    if not work.exists():
        _sh("git", "clone", "-q", str(origin), str(work))
        _sh("git", "-C", str(work), "checkout", "-q", "-B", "main")
    return origin, work


def _commit(work: Path) -> str:
    (work / "Dockerfile").write_text(DOCKERFILE)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    (work / "index.html").write_text(f"<h1>Hello from Fornax</h1><p>built from a commit made {stamp}</p>\n")
    _sh("git", "-C", str(work), "add", "-A")
    _sh(
        "git",
        "-C",
        str(work),
        "-c",
        "user.name=Fornax demo",
        "-c",
        "user.email=demo@fornax.local",
        "commit",
        "-q",
        "-m",
        f"demo change {stamp}",
    )
    _sh("git", "-C", str(work), "push", "-q", "origin", "HEAD:refs/heads/main")
    return _sh("git", "-C", str(work), "rev-parse", "HEAD")


def _service(demo: Demo, home: Path) -> str:
    """Create the demo service (or reuse it, giving it a fresh webhook secret); returns the secret."""
    secret = secrets.token_hex(16)
    api = f"/api/v1/{demo.user}/services"
    resp = demo.http.post(
        api,
        json={
            "name": demo.service_name,
            "description": "fornax demo",
            "repository": {"url": demo.repo_url, "vcs": "git"},
            "webhook_secret": secret,
        },
    )
    if resp.status_code in (201, 202):
        demo.service_id = resp.json()["service_id"]
    elif resp.status_code == 409:
        listed = demo.http.get(api, params={"limit": 100}).json()
        items = listed.get("services", listed if isinstance(listed, list) else [])
        demo.service_id = next(s["service_id"] for s in items if s.get("name") == demo.service_name)
        upd = demo.http.put(f"{api}/{demo.service_id}", json={"webhook_secret": secret})
        if upd.status_code >= 300:
            raise RuntimeError(f"updating the demo service failed: {upd.status_code} {upd.text}")
    else:
        raise RuntimeError(f"creating the service failed: {resp.status_code} {resp.text}")
    return secret


def _wait_service(demo: Demo, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = demo.http.get(f"/api/v1/{demo.user}/services/{demo.service_id}")
        status = resp.json().get("status") if resp.status_code == 200 else None
        if status and status != "accepted":
            return str(status)
        time.sleep(0.3)
    raise RuntimeError("the repository check did not finish (is the builder running?)")


def webhook(repo_url: str, sha: str, secret: str, service: str = SERVICE) -> tuple[dict[str, str], bytes]:
    """A signed GitHub push delivery for `sha` on main."""
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "before": "0" * 40,
            "after": sha,
            "created": False,
            "deleted": False,
            "repository": {"name": service, "full_name": f"demo/{service}", "clone_url": repo_url},
            "head_commit": {"id": sha, "message": "demo change"},
            "pusher": {"name": "demo"},
        }
    ).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
    }
    return headers, body


def _follow(demo: Demo, sha: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    version_id = None
    last = None
    while time.monotonic() < deadline:
        if version_id is None:
            resp = demo.http.get(f"/api/v1/{demo.user}/services/{demo.service_id}/versions")
            for v in resp.json().get("versions", []) if resp.status_code == 200 else []:
                if v.get("commit") == sha:
                    version_id = v["version_id"]
                    demo.out(f"version {v['name']} ({version_id}) requested by the webhook")
        else:
            doc = demo.http.get(f"/api/v1/{demo.user}/versions/{version_id}").json()
            stages = " ".join(f"{s['name']}:{s['status']}" for s in doc.get("stages", []))
            if stages != last:
                demo.out(f"  {doc.get('status'):8} {stages}")
                last = stages
            if doc.get("status") in ("success", "failed", "cancelled"):
                return doc
        time.sleep(0.3)
    raise RuntimeError(f"the version did not finish within {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fornax demo", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the version")
    parser.add_argument("--service", default=SERVICE,
                        help="the demo service's name (its deployed container is fornax-NAME-NAME)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    settings = get_settings()
    home = (settings.data_dir / "demo").resolve()
    home.mkdir(parents=True, exist_ok=True)
    try:
        from infra.local.images import ensure_busybox_image

        print(f"base image: {ensure_busybox_image()}")
        user, token = _user_and_token(settings, home)
        origin, work = _repository(home)
        http = httpx.Client(
            base_url=f"http://{settings.gateway_host}:{settings.gateway_port}",
            timeout=30,
            headers={"Authorization": f"Bearer {token}"},
        )
        demo = Demo(settings, http, user, token, str(origin), service_name=args.service)
        secret = _service(demo, home)
        print(f"service {demo.service_name} ({demo.service_id}) for {origin}: repository {_wait_service(demo)}")
        sha = _commit(work)
        print(f"pushed commit {sha[:12]} to main")
        headers, body = webhook(str(origin), sha, secret, demo.service_name)
        resp = http.post("/webhooks/github", content=body, headers=headers)
        if resp.status_code >= 300:
            raise RuntimeError(f"the webhook was refused: {resp.status_code} {resp.text}")
        print(f"sent a signed GitHub push webhook: {resp.status_code}")
        demo.version = doc = _follow(demo, sha, args.timeout)
    except (RuntimeError, httpx.HTTPError, OSError) as exc:
        print(f"fornax demo: {exc}", file=sys.stderr)
        return 1
    if doc.get("status") != "success":
        print(f"fornax demo: version {doc.get('status')}: {doc.get('error')}", file=sys.stderr)
        return 1
    print(f"image:  {doc.get('image')}")
    print(f"digest: {doc.get('digest')}")
    print(f"tag:    {doc.get('tag') or doc.get('name')} at {doc.get('commit')} in {origin}")
    for step in AFTER_BUILD:
        code = step(demo)
        if code:
            return int(code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
