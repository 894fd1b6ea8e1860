"""Helpers for the builder's integration and e2e tests: local git/svn repositories, the HTTP API as a
user, registry queries, and leak checks by label."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import docker
import httpx

from infra.local.stack import REGISTRY_PASSWORD, REGISTRY_USER
from tests.waits import wait_until

TERMINAL = ("success", "failed", "cancelled")


def sh(*argv: str, cwd: Path | None = None, input: str | None = None) -> str:
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, input=input)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {res.stdout}{res.stderr}")
    return res.stdout.strip()


def dockerfile(*lines: str, base: str = "fornax/busybox:latest") -> str:
    return "\n".join([f"FROM {base}", *lines]) + "\n"


class GitRepo:
    """A bare origin (the service URL) and a working clone to commit from."""

    def __init__(self, root: Path, branch: str = "main") -> None:
        self.root = root
        self.origin = root / "origin.git"
        self.work = root / "work"
        self.branch = branch
        sh("git", "init", "-q", "--bare", "-b", branch, str(self.origin))
        sh("git", "init", "-q", "-b", branch, str(self.work))
        sh("git", "-C", str(self.work), "remote", "add", "origin", str(self.origin))

    @property
    def url(self) -> str:
        return str(self.origin)

    def commit(self, files: dict[str, str], message: str = "change", push: bool = True) -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        sh("git", "-C", str(self.work), "add", "-A")
        sh(
            "git",
            "-C",
            str(self.work),
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@x",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            message,
        )
        if push:
            sh("git", "-C", str(self.work), "push", "-q", "origin", f"HEAD:refs/heads/{self.branch}")
        return sh("git", "-C", str(self.work), "rev-parse", "HEAD")

    def remove(self, name: str) -> str:
        sh("git", "-C", str(self.work), "rm", "-q", name)
        return self.commit({}, f"remove {name}")

    def tag_commit(self, name: str) -> str | None:
        """The commit the origin's tag points at (None if no such tag)."""
        try:
            return sh(
                "git",
                "--git-dir",
                str(self.origin),
                "rev-parse",
                "--verify",
                "-q",
                f"refs/tags/{name}^{{commit}}",
            )
        except RuntimeError:
            return None

    def tag_type(self, name: str) -> str:
        return sh("git", "--git-dir", str(self.origin), "cat-file", "-t", f"refs/tags/{name}")


class SvnRepo:
    """`svnadmin create` + trunk/tags; the service URL is .../trunk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo = root / "svnrepo"
        self.work = root / "svnwork"
        sh("svnadmin", "create", str(self.repo))
        self.base = f"file://{self.repo}"
        sh("svn", "mkdir", "-q", "-m", "layout", f"{self.base}/trunk", f"{self.base}/tags")
        sh("svn", "checkout", "-q", f"{self.base}/trunk", str(self.work))

    @property
    def url(self) -> str:
        return f"{self.base}/trunk"

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            existed = path.exists()
            path.write_text(text)
            if not existed:
                sh("svn", "add", "-q", "--parents", str(path))
        sh("svn", "commit", "-q", "-m", message, str(self.work))
        sh("svn", "update", "-q", str(self.work))
        return sh("svn", "info", "--show-item", "revision", str(self.work))

    def tag_source(self, name: str) -> str | None:
        """The trunk revision a tag was copied from (None if no such tag)."""
        try:
            out = sh("svn", "log", "-v", "--stop-on-copy", "-q", f"{self.base}/tags/{name}")
        except RuntimeError:
            return None
        for line in out.splitlines():
            if "(from /trunk:" in line:
                return line.rsplit(":", 1)[1].rstrip(")")
        return None


class Api:
    """The gateway as one user."""

    def __init__(self, port: int, user: str, token: str) -> None:
        self.user = user
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    def create_service(self, name: str, url: str, vcs: str = "git", **extra: Any) -> dict[str, Any]:
        body = {"name": name, "repository": {"url": url, "vcs": vcs, **extra.pop("repository", {})}, **extra}
        resp = self.http.post(f"/api/v1/{self.user}/services", json=body)
        # 201 once readable; 202 when the projector (just started) is still catching up
        assert resp.status_code in (201, 202), resp.text
        if resp.status_code == 202:
            url = resp.headers["Location"]
            wait_until(lambda: self.http.get(url).status_code == 200, 60, "the service to be readable")
        return resp.json()

    def service(self, service_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/api/v1/{self.user}/services/{service_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait_repo_status(self, service_id: str, timeout: float = 60) -> str:
        def status() -> str | None:
            resp = self.http.get(f"/api/v1/{self.user}/services/{service_id}")
            if resp.status_code != 200:
                return None
            data = resp.json()
            st = data.get("status") or (data.get("repository") or {}).get("status")
            return st if st and st != "accepted" else None

        return wait_until(status, timeout, f"repository check of {service_id}")

    def create_version(self, service_id: str, name: str, **extra: Any) -> httpx.Response:
        return self.http.post(
            f"/api/v1/{self.user}/versions", json={"service_id": service_id, "name": name, **extra}
        )

    def new_version(self, service_id: str, name: str | None = None, **extra: Any) -> str:
        resp = self.create_version(service_id, name or f"v-{uuid.uuid4().hex[:8]}", **extra)
        assert resp.status_code in (201, 202), resp.text  # (202: the projector is catching up)
        return resp.json()["version_id"]

    def version(self, version_id: str) -> dict[str, Any] | None:
        resp = self.http.get(f"/api/v1/{self.user}/versions/{version_id}")
        return resp.json() if resp.status_code == 200 else None

    def wait_version(
        self, version_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 90
    ) -> dict:
        def check() -> dict | None:
            doc = self.version(version_id)
            return doc if doc and doc.get("status") in statuses else None

        return wait_until(check, timeout, f"version {version_id} to reach {statuses}")

    def cancel(self, version_id: str) -> httpx.Response:
        return self.http.post(f"/api/v1/{self.user}/versions/{version_id}/cancel")


def registry_tags(port: int, repo: str) -> list[str]:
    resp = httpx.get(f"http://127.0.0.1:{port}/v2/{repo}/tags/list", auth=(REGISTRY_USER, REGISTRY_PASSWORD))
    if resp.status_code != 200:
        return []
    return resp.json().get("tags") or []


def leftovers(version_id: str, workspaces: Path) -> list[str]:
    """Containers, networks (by label) and the workspace (and its git directory) a version left behind."""
    client = docker.from_env()
    try:
        selector = {"label": f"fornax.version={version_id}"}
        found = [f"container {c.name}" for c in client.containers.list(all=True, filters=selector)]
        found += [f"network {n.name}" for n in client.networks.list(filters=selector)]
    finally:
        client.close()
    for path in (workspaces / version_id, workspaces / f"{version_id}.git"):  # the git dir lies beside it
        if path.exists():
            found.append(f"workspace {path}")
    return found


def wait_clean(version_id: str, workspaces: Path, timeout: float = 30) -> None:
    wait_until(lambda: not leftovers(version_id, workspaces), timeout, f"no leftovers of {version_id}")


def remove_images(reference_prefix: str) -> None:
    """Remove local images whose tags or digests start with the prefix (what a test built, and what a
    Docker-host deploy pulled by digest: `repo@sha256:…`, an image with no tag)."""
    client = docker.from_env()
    try:
        for image in client.images.list():
            names = [*image.tags, *(image.attrs.get("RepoDigests") or [])]
            if any(n.startswith(reference_prefix) for n in names):
                try:
                    client.images.remove(image.id, force=True)  # (every tag of it, too)
                except docker.errors.APIError:
                    pass
    except docker.errors.DockerException:
        pass  # the engine went away: nothing more to tidy
    finally:
        client.close()
