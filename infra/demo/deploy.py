"""`fornax demo`'s last step: deploy the demo version to the `local` Docker target through the API and
show the app answering on localhost."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

_PORT = re.compile(r"(\d+)/tcp -> ([0-9.]+):(\d+)")
_TAG = re.compile(r"<[^>]+>")


class DemoDeployError(RuntimeError):
    pass


def _wait_finished(client: httpx.Client, path: str, deployment_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = client.get(path, params={"limit": 50})
        resp.raise_for_status()
        for d in resp.json()["deployments"]:
            if d["deployment_id"] == deployment_id and d["status"] in ("success", "failed", "skipped"):
                return d  # type: ignore[no-any-return]
        time.sleep(0.3)
    raise DemoDeployError(f"deployment {deployment_id} did not finish within {timeout:.0f}s")


def probe(url: str, timeout: float = 20.0) -> str:
    """The first answer of `url` (status and the start of the body), retrying while it starts."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(url, timeout=2)
            body = " ".join(_TAG.sub(" ", resp.text).split())[:200]  # readable in a terminal
            return f"HTTP {resp.status_code}: {body}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.3)
    raise DemoDeployError(f"{url} did not answer within {timeout:.0f}s ({last})")


def deploy_and_probe(
    gateway_url: str,
    token: str,
    user: str,
    service_id: str,
    version_id: str,
    target: str = "local",
    timeout: float = 120.0,
) -> str:
    """Deploy `version_id` to `target`, wait for the outcome, probe the published port; a summary line."""
    base = f"/api/v1/{user}/services/{service_id}"
    with httpx.Client(
        base_url=gateway_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        resp = client.post(f"{base}/deploy", json={"version_id": version_id, "target": target})
        if resp.status_code != 202:
            raise DemoDeployError(f"deploy refused ({resp.status_code}): {resp.text[:300]}")
        deployment = _wait_finished(client, f"{base}/deployments", resp.json()["deployment_id"], timeout)
    if deployment["status"] != "success":
        raise DemoDeployError(f"deploy {deployment['status']}: {deployment.get('reason')}")
    detail = deployment.get("detail") or ""
    ports = _PORT.findall(detail)
    if not ports:
        return f"deployed to {target}: {detail} (the image publishes no port to probe)"
    _, host, port = ports[0]
    url = f"http://{host}:{port}/"
    return f"deployed to {target}: {detail}\n  {url} answered {probe(url)}"


def demo_step(demo: Any) -> int | None:
    """`fornax demo`'s step after the build (build.py's AFTER_BUILD): deploy to `local`."""
    version_id = (demo.version or {}).get("version_id")
    if not version_id:
        return None
    demo.out("deploying to the local Docker engine (target 'local') ...")
    try:
        summary = deploy_and_probe(
            str(demo.http.base_url), demo.token, demo.user, demo.service_id, version_id
        )
    except (DemoDeployError, httpx.HTTPError) as exc:
        demo.out(f"fornax demo: deploy: {exc}")
        return 1
    demo.out(summary)
    return None
