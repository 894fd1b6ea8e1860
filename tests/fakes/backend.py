"""FakeBackend: a ContainerBackend without Docker, steered like Woodpecker's dummy backend.

A container "runs" its `sh -c` script line by line, each line read as one command (set -e applies:
the first command that fails ends it with that code):

    echo [-n] WORDS          WORDS (and a newline unless -n)
    printf FORMAT ARGS       '%s\\n' per argument (the runner's command markers), else FORMAT as is
    printenv NAME            the variable's value (exit 1 if unset)
    sleep SECONDS            waits (asyncio time)
    exit N / true / false    ends with N / succeeds / fails with 1
    hang                     waits until the container is stopped or removed
    oom                      killed by the memory limit (exit 137, OOMKilled)
    spew BYTES [CHAR]        one line of BYTES characters
    write PATH TEXT          writes a file: into the host directory of a bind (the workspace) when
                             PATH is under its target, else into the container (for copy_from)
    anything else            "sh: NAME: not found", exit 127

A container without a command (a service with no `commands`) hangs, like a server. Environment
steering: FAKE_CREATE_ERROR / FAKE_START_ERROR make create / start refuse with that message.
Backend steering: `images` (present on the host; None = every image), `registry` (pullable with
credentials), `refuse_network`, `create_delay`, `archives` (raw tar per container path).
Everything done is recorded in `events`, in order: ("network"|"pull"|"create"|"start"|"stop"|"remove", name).
"""

from __future__ import annotations

import asyncio
import io
import posixpath
import shlex
import tarfile
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from services.builder.pipeline.backend import BackendError, ContainerSpec, ObjectNotFound
from services.builder.pipeline.errors import StageFailed
from services.builder.pipeline.network import EPOCH_LABEL, LABEL, labels, network_name

KILLED, TERMINATED, NOT_FOUND = 137, 143, 127


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


@dataclass(eq=False)
class FakeContainer:
    spec: ContainerSpec
    state: str = "created"  # created | running | exited | removed
    exit_code: int | None = None
    oom: bool = False
    files: dict[str, bytes] = field(default_factory=dict)  # container path → content
    chunks: list[bytes] = field(default_factory=list)  # everything it printed
    task: asyncio.Task[None] | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    signal: int = KILLED  # the exit code a stop gives

    @property
    def name(self) -> str:
        return self.spec.name

    def output(self) -> bytes:
        return b"".join(self.chunks)


class FakeBackend:
    def __init__(self, *, images: set[str] | None = None, registry: set[str] | None = None,
                 refuse_network: str | None = None, create_delay: float = 0.0) -> None:
        self.images = images
        self.registry = registry or set()
        self.refuse_network = refuse_network
        self.create_delay = create_delay
        self.archives: dict[str, bytes] = {}
        self.events: list[tuple[str, str]] = []
        self.containers: dict[str, FakeContainer] = {}  # not removed yet
        self.all: list[FakeContainer] = []  # every container ever created
        self.networks: dict[str, dict[str, str]] = {}
        self.pulls: list[tuple[str, dict[str, str] | None]] = []

    # -- steering helpers for tests -----------------------------------------------------------------
    def created(self, role: str | None = None) -> list[FakeContainer]:
        return [c for c in self.all if role is None or c.spec.labels.get("fornax.role") == role]

    def names(self, kind: str) -> list[str]:
        return [name for what, name in self.events if what == kind]

    # -- the port -----------------------------------------------------------------------------------
    async def ensure_network(self, version_id: str) -> str:
        if self.refuse_network:
            raise BackendError(self.refuse_network)
        name = network_name(version_id)
        if name not in self.networks:
            self.networks[name] = labels(version_id)
            self.events.append(("network", name))
        return name

    async def ensure_image(self, image: str, auth: dict[str, str] | None) -> None:
        if self.images is None or image in self.images:
            return
        if auth is not None and image in self.registry:
            self.pulls.append((image, auth))
            self.events.append(("pull", image))
            self.images.add(image)
            return
        raise StageFailed(f"image {image} is not available on the build host")

    async def create(self, spec: ContainerSpec) -> FakeContainer:
        if self.create_delay:
            await asyncio.sleep(self.create_delay)
        if why := spec.environment.get("FAKE_CREATE_ERROR"):
            raise BackendError(why)
        if spec.network not in self.networks:
            raise ObjectNotFound(f"network {spec.network} not found")
        if spec.name in self.containers:  # a leftover of an earlier attempt is replaced
            await self.remove(self.containers[spec.name])
        container = FakeContainer(spec)
        self.containers[spec.name] = container
        self.all.append(container)
        self.events.append(("create", spec.name))
        return container

    async def start(self, container: FakeContainer) -> None:
        if container.state == "removed":
            raise ObjectNotFound(f"no such container: {container.name}")
        if why := container.spec.environment.get("FAKE_START_ERROR"):
            raise BackendError(why)
        container.state = "running"
        self.events.append(("start", container.name))
        container.task = asyncio.create_task(self._run(container))

    async def output(self, container: FakeContainer) -> AsyncGenerator[bytes, None]:
        sent = 0
        while True:
            while sent < len(container.chunks):
                sent += 1
                yield container.chunks[sent - 1]
            if container.ended.is_set():
                return
            async with container.changed:
                await container.changed.wait_for(lambda n=sent: n < len(container.chunks) or container.ended.is_set())

    async def wait(self, container: FakeContainer) -> int:
        await container.ended.wait()
        return -1 if container.exit_code is None else container.exit_code

    async def oom_killed(self, container: FakeContainer) -> bool:
        return container.oom

    async def copy_from(self, container: FakeContainer, path: str, into: IO[bytes]) -> None:
        if path in self.archives:
            into.write(self.archives[path])
            return
        prefix = path.rstrip("/") + "/"
        found = {p: data for p, data in container.files.items() if p == path or p.startswith(prefix)}
        if not found:
            raise ObjectNotFound(f"Could not find the file {path} in container {container.name}")
        base = posixpath.dirname(path.rstrip("/"))
        with tarfile.open(fileobj=into, mode="w") as tar:
            for p, data in sorted(found.items()):
                info = tarfile.TarInfo(posixpath.relpath(p, base))
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    async def remove(self, container: FakeContainer, graceful: bool = False) -> None:
        if container.state == "removed":
            return
        if container.task is not None and not container.task.done():
            if graceful:
                self.events.append(("stop", container.name))
            container.signal = TERMINATED if graceful else KILLED
            container.task.cancel()
            await asyncio.gather(container.task, return_exceptions=True)
        container.state = "removed"
        if self.containers.get(container.name) is container:
            del self.containers[container.name]
        self.events.append(("remove", container.name))
        await self._ended(container)

    async def cleanup(self, version_id: str, epoch: int | None = None) -> None:
        for container in list(self.containers.values()):
            own = container.spec.labels.get(LABEL) == version_id
            if own and (epoch is None or container.spec.labels.get(EPOCH_LABEL) == str(epoch)):
                await self.remove(container)
        if epoch is None:
            for name, net_labels in list(self.networks.items()):
                if net_labels.get(LABEL) == version_id:
                    del self.networks[name]
                    self.events.append(("remove-network", name))

    # -- the script ---------------------------------------------------------------------------------
    async def _ended(self, container: FakeContainer) -> None:
        container.ended.set()
        async with container.changed:
            container.changed.notify_all()

    async def _print(self, container: FakeContainer, data: str) -> None:
        container.chunks.append(data.encode())
        async with container.changed:
            container.changed.notify_all()

    async def _run(self, container: FakeContainer) -> None:
        try:
            if container.spec.command:
                for line in container.spec.command[-1].split("\n"):  # (not splitlines: the markers hold \x1e)
                    code = await self._command(container, line)
                    if code:
                        raise _Exit(code)
            else:
                await asyncio.Event().wait()  # a server: runs until stopped
            container.exit_code = 0
        except _Exit as end:
            container.exit_code = end.code
        except asyncio.CancelledError:
            container.exit_code = container.signal
        container.state = "exited" if container.state != "removed" else container.state
        await self._ended(container)

    async def _command(self, container: FakeContainer, line: str) -> int:
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        if not words or words[0] in ("exec", "set", "true"):
            return 0
        cmd, args = words[0], words[1:]
        env = container.spec.environment
        if cmd == "echo":
            newline = not (args and args[0] == "-n")
            await self._print(container, " ".join(args[0 if newline else 1:]) + ("\n" if newline else ""))
        elif cmd == "printf":
            fmt, rest = (args[0], args[1:]) if args else ("", [])
            await self._print(container, "".join(a + "\n" for a in rest) if fmt == "%s\\n" else fmt)
        elif cmd == "printenv":
            if args[0] not in env:
                return 1
            await self._print(container, env[args[0]] + "\n")
        elif cmd == "sleep":
            await asyncio.sleep(float(args[0]))
        elif cmd == "exit":
            return int(args[0]) if args else 0
        elif cmd == "false":
            return 1
        elif cmd == "hang":
            await asyncio.Event().wait()
        elif cmd == "oom":
            container.oom = True
            return KILLED
        elif cmd == "spew":
            await self._print(container, (args[1] if len(args) > 1 else "x") * int(args[0]) + "\n")
        elif cmd == "write":
            return await self._write(container, args[0], " ".join(args[1:]))
        else:
            await self._print(container, f"sh: {cmd}: not found\n")
            return NOT_FOUND
        return 0

    async def _write(self, container: FakeContainer, path: str, text: str) -> int:
        path = posixpath.normpath(posixpath.join(container.spec.working_dir or "/", path))
        for bind in container.spec.binds:
            host, target, mode = bind.rsplit(":", 2)
            if path == target or path.startswith(target.rstrip("/") + "/"):
                if mode == "ro":
                    await self._print(container, f"sh: can't create {path}: Read-only file system\n")
                    return 1
                dest = Path(host) / posixpath.relpath(path, target)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(text + "\n")
                return 0
        container.files[path] = (text + "\n").encode()
        return 0
