"""Image builder and registry ports over the docker SDK.

Both real calls stream the daemon's JSON lines from a worker thread into the event loop as they
arrive. Cancelling the awaiting coroutine (user cancel, timeout) shuts the HTTP connection down:
dockerd then aborts the build (and removes its intermediate container) or the push.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import docker
from docker.api.build import process_dockerfile
from docker.errors import APIError, DockerException, ImageNotFound

from shared.logwriter import MASK_SLACK, MAX_LINE, LineSplitter

OnLine = Callable[[str], Awaitable[None]]
log = logging.getLogger(__name__)
CPU_PERIOD = 100_000  # microseconds: the CFS period the CPU quota of build steps is a share of
STREAM_ITEMS = 256  # decoded daemon messages queued between the reading thread and the loop
_STEP = re.compile(r"^Step \d+/\d+ : ")


class BuildError(Exception):
    """The image build failed; the message names the failing step and the daemon's error."""


class PushError(Exception):
    """The push failed; the message names the reason (e.g. authentication, connection refused)."""


class _TrackingAPI(docker.APIClient):
    """Remembers, per thread, the response behind the last streaming call, so it can be aborted."""

    _tls = threading.local()

    def _stream_helper(self, response: Any, decode: bool = False) -> Any:
        # Buys cancellation: _abort() can shut this response's socket, and dockerd stops the build/push.
        _TrackingAPI._tls.response = response
        return super()._stream_helper(response, decode)

    def _post(self, url: str, **kwargs: Any) -> Any:
        # docker-py's build() passes only memory and CPU shares of the engine's container limits; the
        # CPU quota of RUN steps (cpuperiod/cpuquota, Engine API /build) rides along here.
        extra = getattr(_TrackingAPI._tls, "build_params", None)
        if extra and url.endswith("/build"):
            kwargs["params"] = {**(kwargs.get("params") or {}), **extra}
        return super()._post(url, **kwargs)

    def _set_auth_headers(self, headers: dict[str, str]) -> None:
        # docker-py sends every registry login stored on this host with each build, so a Dockerfile
        # could pull anything those logins can read. Builds send none: the images a build may read
        # were pulled before it, with credentials for the user's own namespace only.
        return None


def connect(base_url: str, cert_path: str | None = None, timeout: int = 120) -> docker.DockerClient:
    """A DockerClient for one host of the pool (TLS when DOCKER_CERT_PATH is set for tcp hosts)."""
    tls: Any = False
    if cert_path and base_url.startswith("tcp://"):
        p = Path(cert_path)
        tls = docker.tls.TLSConfig(
            client_cert=(str(p / "cert.pem"), str(p / "key.pem")), ca_cert=str(p / "ca.pem"), verify=True
        )
    client = docker.DockerClient(base_url=base_url, version="auto", timeout=timeout, tls=tls)
    client.api = _TrackingAPI(base_url=base_url, version="auto", timeout=timeout, tls=tls)
    return client


def _abort(response: Any) -> None:
    """Shut the streaming connection down (unblocks the reading thread; the daemon cancels)."""
    with contextlib.suppress(Exception):
        # The socket under urllib3/http.client: shutting it down unblocks the reading thread at once.
        sock = response.raw._fp.fp.raw
        sock = getattr(sock, "_sock", sock)
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        response.close()


async def stream_items(start: Callable[[], Iterator[dict[str, Any]]]) -> Any:
    """Async-iterate the decoded JSON items of a streaming docker call run in a worker thread."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(STREAM_ITEMS)
    holder: dict[str, Any] = {}
    done = threading.Event()

    def put(kind: str, value: Any) -> None:
        # Waits while STREAM_ITEMS items are queued (a build printing faster than its log is written
        # holds no more memory); gives up once the reader is gone.
        try:
            future = asyncio.run_coroutine_threadsafe(queue.put((kind, value)), loop)
        except RuntimeError:
            return
        while True:
            try:
                future.result(timeout=1.0)
                return
            except concurrent.futures.TimeoutError:
                if done.is_set():
                    future.cancel()
                    return
            except (concurrent.futures.CancelledError, RuntimeError):
                return

    def run() -> None:
        try:
            items = start()
            holder["response"] = getattr(_TrackingAPI._tls, "response", None)
            if done.is_set():  # aborted while the request was being sent
                _abort(holder["response"])
            for item in items:
                if done.is_set():
                    break
                put("item", item)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            put("error", exc)
        finally:
            put("end", None)

    threading.Thread(target=run, daemon=True, name="fornax-docker-stream").start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        done.set()
        if holder.get("response") is not None:
            _abort(holder["response"])


VCS_DIRS = [".git", ".svn", ".hg"]


def build_context(context: Path, dockerfile: Path) -> tuple[str, Any]:
    """The build context as a tar (honouring .dockerignore, without VCS metadata) and the Dockerfile's
    name in it (a Dockerfile outside the context is added under a generated name, as the CLI does)."""
    ignore = context / ".dockerignore"
    exclude = list(VCS_DIRS)
    if ignore.is_file():
        exclude += [
            ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")
        ]
    # docker-py's own (unexported) helper: a Dockerfile outside the context is handled as `docker build` does.
    name, inline = process_dockerfile(str(dockerfile), str(context))
    return name, docker.utils.tar(str(context), exclude=exclude, dockerfile=(name, inline))


# A version name kept as its own tag: lower-case tag characters and no "__" (which marks an encoded one).
_PLAIN_TAG = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
_TAG_HASH = 20  # hex digits of sha256 (80 bits) after the "__"


def image_tag(version: str) -> str:
    """The registry tag of a version name, one-to-one: the name itself when it is a plain lower-case tag,
    else a readable slug, "__" and a hash of the exact name (`V1` and `v1`, `feat/x` and `feat-x`
    must not overwrite each other's image)."""
    if _PLAIN_TAG.fullmatch(version) and "__" not in version:
        return version
    slug = re.sub(r"[^a-z0-9_.-]+", "-", version.lower()).strip("_.-")[: 128 - 2 - _TAG_HASH]
    digest = hashlib.sha256(version.encode()).hexdigest()[:_TAG_HASH]
    return f"{slug.rstrip('_.-') or 'v'}__{digest}"


def image_name(registry: str, user: str, service: str, version: str) -> str:
    """`<registry>/<user>/<service>:<tag>` (user and service names are lower-case DNS labels)."""
    return f"{registry.rstrip('/')}/{user.lower()}/{service.lower()}:{image_tag(version)}"


class ImageBuilder(Protocol):
    async def build(
        self,
        client: Any,
        *,
        context: Path,
        dockerfile: Path,
        image: str,
        labels: dict[str, str],
        memory_mb: int,
        cpu_shares: int,
        on_line: OnLine,
        network: str | None = None,
        cpus: float | None = None,
    ) -> str:
        """Build and tag `image` (RUN steps on `network`, with at most `cpus` CPUs); returns the image
        id; BuildError names the failing step."""


class Registry(Protocol):
    async def push(self, client: Any, image: str, on_line: OnLine) -> str:
        """Push `image` from the host; returns its digest; PushError names the reason."""


@dataclass
class DockerImageBuilder:
    line_limit: int = MAX_LINE  # bytes per log line (settings.log_max_line); longer output lines are cut

    async def build(
        self,
        client: Any,
        *,
        context: Path,
        dockerfile: Path,
        image: str,
        labels: dict[str, str],
        memory_mb: int,
        cpu_shares: int,
        on_line: OnLine,
        network: str | None = None,
        cpus: float | None = None,
    ) -> str:
        api = client.api

        def start() -> Iterator[dict[str, Any]]:
            name, tarball = build_context(context, dockerfile)
            if cpus:
                _TrackingAPI._tls.build_params = {"cpuperiod": CPU_PERIOD, "cpuquota": int(cpus * CPU_PERIOD)}
            try:
                return api.build(
                    fileobj=tarball,
                    custom_context=True,
                    dockerfile=name,
                    tag=image,
                    rm=True,
                    forcerm=True,
                    decode=True,
                    labels=labels,
                    pull=False,
                    # RUN steps join the version's own network, not the engine's default bridge.
                    network_mode=network,
                    container_limits={
                        "memory": memory_mb * 1024 * 1024,
                        "memswap": memory_mb * 1024 * 1024,
                        "cpushares": cpu_shares,
                    },
                )
            finally:
                _TrackingAPI._tls.build_params = None

        image_id = None
        step = None
        tail: list[str] = []
        # A RUN step's output arrives in pieces that need not end at a newline: reassemble its lines,
        # each cut at the limit, in one pass.
        splitter = LineSplitter(self.line_limit + MASK_SLACK)

        async def lines(found: list[str]) -> None:
            nonlocal step, tail
            for line in found:
                if not line.strip():
                    continue
                if _STEP.match(line):
                    step = line
                tail = (tail + [line[:1000]])[-5:]
                await on_line(line)

        try:
            async with contextlib.aclosing(stream_items(start)) as items:
                async for item in items:
                    if "stream" in item:
                        await lines(splitter.feed(str(item["stream"]).encode("utf-8", "surrogatepass")))
                        continue
                    await lines(splitter.close())
                    if "aux" in item and isinstance(item["aux"], dict) and item["aux"].get("ID"):
                        image_id = item["aux"]["ID"]
                    elif "error" in item:
                        message = str(
                            item.get("error") or item.get("errorDetail", {}).get("message", "")
                        ).strip()
                        await on_line(f"ERROR: {message}")
                        where = f" at {step}" if step else ""
                        raise BuildError(f"docker build failed{where}: {message}")
            await lines(splitter.close())
        except (APIError, DockerException) as exc:
            raise BuildError(f"docker build failed: {getattr(exc, 'explanation', None) or exc}") from None
        if image_id is None:
            try:
                image_id = (await asyncio.to_thread(client.images.get, image)).id
            except (ImageNotFound, APIError) as exc:
                raise BuildError(f"docker build produced no image: {' / '.join(tail)}") from exc
        return str(image_id)


@dataclass
class DockerRegistry:
    """Pushes through the build host's engine with the registry credentials from settings."""

    registry: str
    username: str
    password: str

    async def push(self, client: Any, image: str, on_line: OnLine) -> str:
        repo, _, tag = image.rpartition(":")
        auth = {"username": self.username, "password": self.password, "serveraddress": self.registry}

        def start() -> Iterator[dict[str, Any]]:
            return client.api.push(repo, tag=tag, stream=True, decode=True, auth_config=auth)

        if not await asyncio.to_thread(_present, client, image):
            # Pushed and taken off the host by a run that crashed before it could say so: the
            # registry's tag is this version's (tags are one-to-one with version names).
            pushed = await asyncio.to_thread(_registry_digest, client, image, auth)
            if pushed is None:
                raise PushError(f"push of {image} failed: the built image is no longer on the build host "
                                "and not in the registry")
            await on_line(f"{image} was pushed before the builder restarted: {pushed}")
            return pushed
        digest = None
        seen: set[tuple[str, str]] = set()
        try:
            async with contextlib.aclosing(stream_items(start)) as items:
                async for item in items:
                    if "error" in item:
                        message = str(item.get("error") or "").strip() or "unknown error"
                        raise PushError(f"push of {image} to {self.registry} failed: {message}")
                    aux = item.get("aux")
                    if isinstance(aux, dict) and aux.get("Digest"):
                        digest = aux["Digest"]
                    status = item.get("status")
                    if status and "progressDetail" in item and item.get("progress"):
                        continue  # byte counters: too chatty for the log
                    if status and (item.get("id", ""), status) not in seen:
                        seen.add((item.get("id", ""), status))
                        await on_line(f"{item['id']}: {status}" if item.get("id") else str(status))
        except (APIError, DockerException) as exc:
            raise PushError(
                f"push of {image} to {self.registry} failed: {getattr(exc, 'explanation', None) or exc}"
            ) from None
        finally:
            # Off the build host once pushed (or failed): later builds, anyone's, can only reach it
            # through the registry, where the image policy decides. Deploys pull it by digest.
            await asyncio.to_thread(_untag, client, image)
        if not digest:
            raise PushError(f"push of {image} to {self.registry} returned no digest")
        return str(digest)


def _present(client: Any, image: str) -> bool:
    try:
        client.images.get(image)
    except ImageNotFound:
        return False
    return True


def _registry_digest(client: Any, image: str, auth: dict[str, str]) -> str | None:
    """The manifest digest the registry holds for `image`'s tag, through the host's engine; None if none."""
    try:
        found = client.api.inspect_distribution(image, auth_config=auth)
    except (APIError, DockerException):
        return None
    digest = (found or {}).get("Descriptor", {}).get("digest")
    return str(digest) if digest else None


def _untag(client: Any, image: str) -> None:
    """Remove the tag (and the image, unless another tag or a container still uses it)."""
    try:
        client.images.remove(image)
    except ImageNotFound:
        pass
    except (APIError, DockerException) as exc:
        log.warning("could not remove %s from the build host: %s", image, exc)
