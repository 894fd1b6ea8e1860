"""The Docker implementation of the container-backend port (docker-py, blocking calls each in a thread
of its own), and the client-level helpers the builder also uses directly: ensure_network,
ensure_image, cleanup_version."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, Callable
from typing import IO, Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from .backend import BackendError, ContainerSpec, ObjectNotFound
from .containers import blocking
from .errors import StageFailed
from .network import EPOCH_LABEL, LABEL, labels, network_name

STOP_GRACE = 3  # seconds between SIGTERM and SIGKILL
PUMP_CHUNKS = 64  # output chunks (each at most ~16 KiB from the daemon) queued per container
log = logging.getLogger(__name__)


def ensure_network(client: docker.DockerClient, version_id: str):
    """The version's bridge network (user-defined: DNS by name and alias), created if missing."""
    name = network_name(version_id)
    for net in client.networks.list(filters={"label": f"{LABEL}={version_id}"}):
        if net.name == name:
            return net
    try:
        return client.networks.create(name, driver="bridge", labels=labels(version_id), check_duplicate=True)
    except APIError as exc:
        if exc.status_code == 409:  # created meanwhile by a resumed attempt
            return client.networks.get(name)
        raise


def cleanup_version(client: docker.DockerClient, version_id: str, epoch: int | None = None) -> None:
    """Remove every container and network labelled with the version (idempotent). With `epoch`, only
    the containers started under that claim epoch (label fornax.epoch), and no network: the worker
    that took the version over shares it."""
    selector: dict[str, Any] = {"label": f"{LABEL}={version_id}"}
    if epoch is not None:
        selector = {"label": [f"{LABEL}={version_id}", f"{EPOCH_LABEL}={epoch}"]}
    for container in client.containers.list(all=True, filters=selector):
        try:
            container.remove(force=True)
        except NotFound:
            pass
        except APIError as exc:  # "removal already in progress" is fine; anything else is logged
            if exc.status_code != 409:
                log.warning("could not remove container %s: %s", container.name, exc)
    if epoch is not None:
        return
    for net in client.networks.list(filters=selector):
        try:
            net.reload()
            for c in net.attrs.get("Containers") or {}:
                try:
                    net.disconnect(c, force=True)
                except APIError:
                    pass
            net.remove()
        except NotFound:
            pass
        except APIError as exc:
            log.warning("could not remove network %s: %s", net.name, exc)


def ensure_image(client: docker.DockerClient, image: str, auth: dict[str, str] | None) -> None:
    """The image must be on the build host; it is pulled only with explicit credentials (`auth`: the
    user's own namespace of the managed registry), never with a login stored on the host."""
    try:
        client.images.get(image)
        return
    except ImageNotFound:
        pass
    if auth is not None:
        try:
            client.images.pull(image, auth_config=auth)
            return
        except APIError as exc:
            raise StageFailed(f"image {image} could not be pulled: {exc.explanation or exc}") from None
    raise StageFailed(f"image {image} is not available on the build host")


def create(client: docker.DockerClient, name: str, **kwargs: Any):
    """Create a container, replacing a leftover of the same name (a resumed or repeated attempt)."""
    try:
        return client.containers.create(name=name, **kwargs)
    except APIError as exc:
        if exc.status_code != 409:
            raise
    with contextlib.suppress(NotFound):
        client.containers.get(name).remove(force=True)
    return client.containers.create(name=name, **kwargs)


def stop_and_remove(container, graceful: bool = False) -> None:
    """Remove the container; graceful: SIGTERM first (via the init process), SIGKILL after STOP_GRACE."""
    if graceful:
        with contextlib.suppress(NotFound, APIError):
            container.stop(timeout=STOP_GRACE)
    with contextlib.suppress(NotFound):
        try:
            container.remove(force=True)
        except APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise


def create_kwargs(client: docker.DockerClient, spec: ContainerSpec) -> dict[str, Any]:
    """containers.create() arguments for the spec."""
    kwargs: dict[str, Any] = dict(
        image=spec.image,
        environment=spec.environment,
        labels=spec.labels,
        mem_limit=f"{spec.memory_mb}m",
        memswap_limit=f"{spec.memory_mb}m",
        cpu_shares=spec.cpu_shares,
        pids_limit=spec.pids_limit,
        nano_cpus=spec.nano_cpus,
        init=True,  # PID 1 forwards SIGTERM, so a graceful stop works for sh scripts
        network=spec.network,
        detach=True,
    )
    if spec.entrypoint is not None:
        kwargs["entrypoint"] = spec.entrypoint
    if spec.command is not None:
        kwargs["command"] = spec.command
    if spec.working_dir is not None:
        kwargs["working_dir"] = spec.working_dir
    if spec.binds:
        kwargs["volumes"] = list(spec.binds)
    if spec.alias is not None:
        endpoint = client.api.create_endpoint_config(aliases=[spec.alias])
        kwargs["networking_config"] = {spec.network: endpoint}
    return kwargs


def _why(exc: DockerException) -> str:
    return str(getattr(exc, "explanation", None) or exc)


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A blocking docker-py call in its own thread; the engine's refusals as BackendError."""
    try:
        return await blocking(fn, *args, **kwargs)
    except NotFound as exc:
        raise ObjectNotFound(_why(exc)) from None
    except DockerException as exc:
        raise BackendError(_why(exc)) from None


class DockerBackend:
    """ContainerBackend on one Docker engine."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    async def ensure_network(self, version_id: str) -> str:
        net = await _call(ensure_network, self.client, version_id)
        return str(net.name)

    async def ensure_image(self, image: str, auth: dict[str, str] | None) -> None:
        await _call(ensure_image, self.client, image, auth)

    async def create(self, spec: ContainerSpec) -> Any:
        return await _call(create, self.client, spec.name, **create_kwargs(self.client, spec))

    async def start(self, container: Any) -> None:
        await _call(container.start)

    async def wait(self, container: Any) -> int:
        result = await _call(container.wait)
        return int(result.get("StatusCode", -1))

    async def oom_killed(self, container: Any) -> bool:
        try:
            await _call(container.reload)
        except BackendError:
            return False
        return bool(container.attrs.get("State", {}).get("OOMKilled"))

    async def copy_from(self, container: Any, path: str, into: IO[bytes]) -> None:
        def copy() -> None:
            stream, _ = container.get_archive(path)
            for chunk in stream:
                into.write(chunk)

        await _call(copy)

    async def remove(self, container: Any, graceful: bool = False) -> None:
        await _call(stop_and_remove, container, graceful)

    async def cleanup(self, version_id: str, epoch: int | None = None) -> None:
        await _call(cleanup_version, self.client, version_id, epoch)

    async def output(self, container: Any) -> AsyncGenerator[bytes, None]:
        """Follows the container's log in a thread; that thread waits while PUMP_CHUNKS chunks are
        queued, and ends by itself once the container stops or is removed (or the reader is gone)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(PUMP_CHUNKS)
        stopped = threading.Event()

        def put(item: bytes | None) -> bool:
            try:
                future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            except RuntimeError:  # the loop is gone (interpreter shutdown)
                return False
            while True:
                try:
                    future.result(timeout=1.0)
                    return True
                except concurrent.futures.TimeoutError:
                    if stopped.is_set():  # nobody reads any more (the reader was cancelled)
                        future.cancel()
                        return False
                except (concurrent.futures.CancelledError, RuntimeError):
                    return False

        def follow() -> None:
            try:
                for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                    if not put(chunk):
                        return
            except Exception:  # noqa: BLE001 - the container went away: the stream just ends
                pass
            finally:
                put(None)

        threading.Thread(target=follow, daemon=True, name="fornax-logs").start()
        try:
            while (chunk := await queue.get()) is not None:
                yield chunk
        finally:
            stopped.set()
