"""Docker-host target: run the version's image as container `fornax-<user>.<service>.<application>`.

The new container starts next to the old one (under a temporary name), must reach `running` (and
`healthy` when the image has a HEALTHCHECK) and stay up for `settle_seconds`; only then is the old one
removed and the new one renamed. On failure the new one is removed and the old one keeps running.
With fixed host ports the old container has to be stopped first (the port is taken); it is started
again when the new one fails.

Labels are `fornax.deploy.*`, and `fornax.version` is blanked: a deployed app must outlive the build
reapers (which remove containers labelled with a finished version's id).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from shared.settings import DockerTarget, Settings

from . import DeployRequest, DeployResult

_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")
LABEL_SERVICE = "fornax.deploy.service"
LABEL_APPLICATION = "fornax.deploy.application"
LABEL_TARGET = "fornax.deploy.target"
LABEL_VERSION = "fornax.deploy.version"
LABEL_DEPLOYMENT = "fornax.deploy.deployment"
LABEL_DIGEST = "fornax.deploy.digest"
LABEL_IMAGE = "fornax.deploy.image"  # the exact reference (the container's own Image field is the id)


def container_name(user_id: str, service_name: str, application: str) -> str:
    """`fornax-<user>.<service>.<application>`: user and service names hold no '.', so two distinct
    (user, service, application) never share a name (two users' `web` apps both run)."""
    return "fornax-" + ".".join(_UNSAFE.sub("-", part).strip("-.") for part in (user_id, service_name, application))


def app_network(service_id: str) -> str:
    """The service's own bridge network: its apps reach each other, nothing else shares it (builds
    run on their versions' networks, other services' apps on theirs)."""
    return _UNSAFE.sub("-", f"fornax-apps-{service_id}")


class DockerHostTarget:
    """A Docker engine (local or remote) as a single-machine deploy target."""

    kind = "docker"

    def __init__(self, name: str, config: DockerTarget, settings: Settings) -> None:
        self.name = name
        self.config = config
        self.registry = settings.registry_location
        self._auth = {
            "username": settings.registry_username,
            "password": settings.registry_password.get_secret_value(),
        }

    async def deploy(self, request: DeployRequest) -> DeployResult:
        return await asyncio.to_thread(self._deploy, request)

    # -- blocking part -------------------------------------------------------------------------
    def _client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.config.base_url, timeout=60)

    def _deploy(self, req: DeployRequest) -> DeployResult:
        deadline = time.monotonic() + req.timeout
        try:
            client = self._client()
            client.ping()
        except DockerException as exc:
            return DeployResult.failure(f"docker host {self.name!r} unreachable: {type(exc).__name__}")
        try:
            return self._run(client, req, deadline)
        except (APIError, DockerException) as exc:
            return DeployResult.failure(f"docker host {self.name!r}: {_explain(exc)}")
        finally:
            client.close()

    def _image(self, client: docker.DockerClient, req: DeployRequest) -> Any:
        """The exact image: already on this engine (by digest), else pulled from the registry."""
        ref = req.reference
        try:
            return client.images.get(ref)
        except ImageNotFound:
            pass
        auth = self._auth if req.repository.split("/", 1)[0] == self.registry else None
        try:
            return client.images.pull(ref, auth_config=auth)
        except (APIError, ImageNotFound) as exc:
            raise _PullError(f"image pull error for {ref}: {_explain(exc)}") from None

    def _run(self, client: docker.DockerClient, req: DeployRequest, deadline: float) -> DeployResult:
        try:
            image = self._image(client, req)
        except _PullError as exc:
            return DeployResult.failure(str(exc))
        name = container_name(req.user_id, req.service_name, req.application)
        labels = {
            LABEL_SERVICE: req.service_id,
            LABEL_APPLICATION: req.application,
            LABEL_TARGET: self.name,
            LABEL_VERSION: req.version_id,
            LABEL_DEPLOYMENT: req.deployment_id,
            LABEL_DIGEST: req.digest or "",
            LABEL_IMAGE: req.reference,
            **req.labels,
            # Builder images carry `fornax.version=<id>` and containers inherit image labels: blank it,
            # or the builder's reaper would remove the deployed app once its version is finished.
            "fornax.version": "",
        }
        ports = self._ports(image)
        fixed = any(host is not None for _, host in ports.values())
        old = _get(client, name) or self._labelled(client, req)
        if old is not None and old.labels.get(LABEL_SERVICE) != req.service_id:
            return DeployResult.failure(f"container name {name} is taken by a container of another owner")
        stopped_old = False
        if old is not None and fixed and old.status == "running":
            old.stop(timeout=self.config.stop_seconds)
            stopped_old = True
        network = _ensure_network(client, req, self.name)
        started = int(time.time()) - 1  # whole seconds: where the engine's events for it begin
        new = client.containers.run(
            image.id,
            name=f"{name}-{req.deployment_id[:12]}",
            detach=True,
            labels=labels,
            network=network,
            environment=dict(self.config.environment),
            ports=ports,
            restart_policy={"Name": "unless-stopped"},
        )
        healthcheck = bool((image.attrs.get("Config") or {}).get("Healthcheck", {}).get("Test"))
        problem = _wait_ready(new, healthcheck, self.config.settle_seconds, deadline, started)
        if problem:
            _remove(new)
            if stopped_old and old is not None:
                old.start()
            return DeployResult.failure(problem)
        self._remove_previous(client, req, keep=new.id)
        new.rename(name)
        new.reload()
        return DeployResult.success(_describe(name, new))

    def _ports(self, image: Any) -> dict[str, Any]:
        """Configured host ports; any other EXPOSE'd port on a random 127.0.0.1 port."""
        exposed = (image.attrs.get("Config") or {}).get("ExposedPorts") or {}
        ports: dict[str, Any] = {p: ("127.0.0.1", None) for p in exposed}
        for port, host in self.config.ports.items():
            ports[port if "/" in port else f"{port}/tcp"] = ("127.0.0.1", host)
        return {p: (ip, host) for p, (ip, host) in ports.items()}

    def _filters(self, req: DeployRequest) -> dict[str, list[str]]:
        return {
            "label": [
                f"{LABEL_SERVICE}={req.service_id}",
                f"{LABEL_APPLICATION}={req.application}",
                f"{LABEL_TARGET}={self.name}",
            ]
        }

    def _labelled(self, client: docker.DockerClient, req: DeployRequest) -> Any:
        """The app's running container under another name (one named before names held the user)."""
        found = client.containers.list(filters={**self._filters(req), "status": "running"})
        return found[0] if found else None

    def _remove_previous(self, client: docker.DockerClient, req: DeployRequest, keep: str) -> None:
        for c in client.containers.list(all=True, filters=self._filters(req)):
            if c.id != keep:
                _remove(c)
        stale = _get(client, container_name(req.user_id, req.service_name, req.application))
        if stale is not None and stale.id != keep:
            _remove(stale)


class _PullError(Exception):
    pass


def _ensure_network(client: docker.DockerClient, req: DeployRequest, target: str) -> str:
    name = app_network(req.service_id)
    if client.networks.list(names=[name]):
        return name
    try:
        client.networks.create(name, driver="bridge", check_duplicate=True,
                               labels={LABEL_SERVICE: req.service_id, LABEL_TARGET: target})
    except APIError as exc:
        if exc.status_code != 409:  # 409: created meanwhile by a concurrent deploy
            raise
    return name


def remove_app_networks(client: docker.DockerClient, service_id: str | None = None) -> None:
    """Remove the app networks (of one service, or all) that no container uses any more."""
    label = f"{LABEL_SERVICE}={service_id}" if service_id else LABEL_SERVICE
    for net in client.networks.list(filters={"label": label}):
        try:
            net.reload()
            if not net.attrs.get("Containers"):
                net.remove()
        except (NotFound, APIError):
            pass


def _get(client: docker.DockerClient, name: str) -> Any:
    try:
        return client.containers.get(name)
    except NotFound:
        return None


def _remove(container: Any) -> None:
    try:
        container.remove(force=True)
    except NotFound:
        pass


def _wait_ready(container: Any, healthcheck: bool, settle: float, deadline: float, started: int) -> str:
    """'' once the container runs (healthy, if checked) for `settle` seconds; else why not."""
    running_since: float | None = None
    while True:
        container.reload()
        state = container.attrs.get("State") or {}
        status = state.get("Status")
        if status in ("exited", "dead") or state.get("Restarting") or container.attrs.get("RestartCount"):
            return f"container exited with code {_exit_code(container, state, started)}{_tail(container)}"
        if status == "running":
            running_since = running_since or time.monotonic()
            health = (state.get("Health") or {}).get("Status")
            if healthcheck and health == "unhealthy":
                return f"container is unhealthy{_tail(container)}"
            if (not healthcheck or health == "healthy") and time.monotonic() - running_since >= settle:
                return ""
        if time.monotonic() > deadline:
            what = "healthy" if healthcheck else "running"
            return f"timeout: container not {what} within the deploy timeout"
        time.sleep(0.05)


def _exit_code(container: Any, state: dict[str, Any], since: int) -> Any:
    """The code the container last exited with.

    Once the restart policy has started it again, State.ExitCode is the running attempt's (0), so the
    engine's `die` events are the record of how the earlier attempts ended.
    """
    if state.get("Status") in ("exited", "dead"):
        return state.get("ExitCode")
    try:
        events = container.client.events(
            since=since,
            until=int(time.time()) + 1,
            filters={"container": container.id, "event": "die"},
            decode=True,
        )
        codes = [e.get("Actor", {}).get("Attributes", {}).get("exitCode") for e in events]
    except DockerException:
        codes = []
    codes = [c for c in codes if c is not None]
    return codes[-1] if codes else state.get("ExitCode")


def _tail(container: Any) -> str:
    try:
        text = container.logs(tail=5).decode(errors="replace").strip()
    except DockerException:
        return ""
    return f"; last output: {text[-400:]}" if text else ""


def _describe(name: str, container: Any) -> str:
    bound = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    maps = [
        f"{port} -> {b['HostIp']}:{b['HostPort']}"
        for port, binds in sorted(bound.items())
        for b in binds or []
    ]
    return f"container {name} running" + (f"; ports {', '.join(maps)}" if maps else "")


def _explain(exc: Exception) -> str:
    if isinstance(exc, APIError):
        return str(exc.explanation or exc)[:500]
    return f"{type(exc).__name__}: {exc}"[:500]
