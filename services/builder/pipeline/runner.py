"""run_stage: one container stage (integration, pre_build, post_build) of one version.

Lifecycle: the version network (created if missing) → service containers (integration only, each
with its name as network alias, started first) → the step container running a generated `sh -e`
script in /workspace (the bind-mounted repository) → outputs copied back (pre_build) → every
container of the stage removed, whatever happened. The network stays for the next stage;
cleanup_version removes it. The containers run on a ContainerBackend (backend.py): Docker in
production, a steerable fake in unit tests.
"""

from __future__ import annotations

import asyncio
import posixpath
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.logwriter import MASK_SLACK, MAX_LINE

from . import containers as C
from .backend import BackendError, Container, ContainerBackend, ContainerSpec, ObjectNotFound
from .config import PipelineConfig, PreBuild, Step
from .config_fields import WORKSPACE_MOUNT
from .errors import StageFailed
from .images import ImageRefused, check_image, pull_auth
from .network import labels, network_name

CONTAINER_STAGES = ("integration", "pre_build", "post_build")


@dataclass
class StageContext:
    """Everything a stage needs; `deadline` (time.monotonic() value) carries the version timeout."""

    backend: ContainerBackend  # the build host's engine (DockerBackend(client))
    version_id: str
    user_id: str
    workspace: Path
    log: Any  # shared.logwriter.LogWriter (anything with `async write(stage, text, stream)`)
    settings: Any  # shared.settings.Settings
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    memory_mb: int | None = None  # None: config.container_limits(settings)
    cpu_shares: int | None = None
    deadline: float | None = None
    epoch: int | None = None  # the builder's claim epoch: containers are labelled fornax.epoch=<epoch>
    commit: str | None = None  # the version's commit and name, and the service's secrets by name
    version_name: str | None = None  # (integration.jenkins passes them on)
    secrets: dict[str, str] | None = None


async def run_stage(ctx: StageContext, config: PipelineConfig, stage: str) -> None:
    """Run one container stage; StageFailed on failure, timeout ("timed out") or cancel ("cancelled")."""
    if stage not in CONTAINER_STAGES:
        raise ValueError(f"run_stage runs {CONTAINER_STAGES}, not {stage!r}")
    step = config.step(stage)
    if step is None:
        return
    timeout = config.timeout(stage, ctx.settings.stage_timeout)
    if ctx.deadline is not None:
        timeout = min(timeout, ctx.deadline - time.monotonic())
    if ctx.cancelled.is_set():
        raise StageFailed("cancelled", kind="cancelled")
    if timeout <= 0:
        raise StageFailed(f"{stage} timed out (the version ran out of time)", kind="timed_out")
    jenkins = getattr(step, "jenkins", None)
    if jenkins is not None:
        from .jenkins import run_job

        await run_job(ctx, jenkins, stage, timeout)
        return
    run = _StageRun(ctx, config, stage, step)
    work = asyncio.create_task(run.execute())
    cancel = asyncio.create_task(ctx.cancelled.wait())
    try:
        done, _ = await asyncio.wait({work, cancel}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            try:
                work.result()
            except BackendError as exc:  # the engine refused something: a stage error, not a crash
                raise StageFailed(f"{stage}: docker error: {exc}") from None
            return
        if cancel in done:
            await ctx.log.write(stage, "cancelled: stopping containers", "system")
            failure = StageFailed("cancelled", kind="cancelled")
        else:
            await ctx.log.write(stage, f"timed out after {timeout:.0f}s: stopping containers", "system")
            failure = StageFailed(f"{stage} timed out after {timeout:.0f}s", kind="timed_out")
        await run.remove_all(graceful=True)  # SIGTERM, SIGKILL later; ends the work task's waits
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        raise failure
    finally:
        cancel.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
        await asyncio.shield(run.remove_all())


class _StageRun:
    def __init__(self, ctx: StageContext, config: PipelineConfig, stage: str, step: Step) -> None:
        self.ctx, self.config, self.stage, self.step = ctx, config, stage, step
        self.backend = ctx.backend
        mem, cpu = config.container_limits(ctx.settings)
        self.memory_mb = ctx.memory_mb or mem
        self.cpu_shares = ctx.cpu_shares or cpu
        self.created: list[Container] = []
        # A container whose creation was still in flight when the stage ended (timeout, cancel) must
        # not outlive it: it removes itself once created, and remove_all waits for that.
        self._creating: set[asyncio.Task[Container]] = set()
        self._closed = False
        self.pumps: list[asyncio.Task[None]] = []
        self.network = network_name(ctx.version_id)
        # The log writer cuts lines at settings.log_max_line after masking; the reader keeps a bit more.
        self._line_limit = int(getattr(ctx.settings, "log_max_line", MAX_LINE)) + MASK_SLACK

    # -- the stage ---------------------------------------------------------------------------------
    async def execute(self) -> None:
        ctx, stage = self.ctx, self.stage
        await self.backend.ensure_network(ctx.version_id)
        services = getattr(self.step, "services", {}) or {}
        for name, spec in services.items():
            await ctx.log.write(stage, f"starting service {name} ({spec.image})", "system")
            container = await self._start(
                f"svc-{name}", spec.image, spec.environment,
                service_script=spec.commands, alias=name, role="service",
            )
            self.pumps.append(asyncio.create_task(
                C.pump_lines(self.backend, container, self._service_line(name), self._line_limit)))
        container = await self._start(stage, self.step.image, self.step.environment,
                                      script=C.step_script(self.step.commands), role="step")
        tail = C.Tail()
        current: list[int] = [-1]

        async def on_line(line: str) -> None:
            before, mark, rest = line.partition(C.MARK)
            if mark and rest.isdigit() and int(rest) < len(self.step.commands):
                if before:  # the previous command's output ended without a newline
                    tail.add(before)
                    await ctx.log.write(stage, before)
                current[0] = int(rest)
                await ctx.log.write(stage, f"$ {self.step.commands[current[0]]}")
                return
            tail.add(line)
            await ctx.log.write(stage, line)

        # The command marker starts a line of its own even after output without a newline, so a cut
        # of that output cannot swallow it.
        pump = asyncio.create_task(
            C.pump_lines(self.backend, container, on_line, self._line_limit, split_before=C.MARK[:1].encode()))
        code = await self.backend.wait(container)
        await pump
        if code != 0:
            raise StageFailed(await self._failure(container, code, current[0], tail), exit_code=code)
        if isinstance(self.step, PreBuild):
            for path in self.step.outputs:
                await self._copy_output(container, path)

    async def _failure(self, container: Container, code: int, idx: int, tail: C.Tail) -> str:
        cmd = self.step.commands[idx] if 0 <= idx < len(self.step.commands) else None
        oom = await self.backend.oom_killed(container)
        what = f"command `{cmd}`" if cmd is not None else "the step"
        why = f"was killed: out of memory (limit {self.memory_mb} MiB)" if oom else f"exited with code {code}"
        msg = f"{self.stage}: {what} {why}"
        return msg + (f"; last lines:\n{tail.text()}" if tail.lines else "")

    def _service_line(self, name: str):
        async def on_line(line: str) -> None:
            await self.ctx.log.write(self.stage, f"[{name}] {line}")
        return on_line

    async def _start(self, suffix: str, image: str, env: dict[str, str], *, role: str,
                     script: str | None = None, service_script: list[str] | None = None,
                     alias: str | None = None) -> Any:
        ctx = self.ctx
        try:  # checked before the stage too; here again for any caller of run_stage
            check_image(image, user=ctx.user_id, settings=ctx.settings, where=f"{self.stage}: {role}")
        except ImageRefused as exc:
            raise StageFailed(str(exc)) from None
        auth = pull_auth(image, user=ctx.user_id, settings=ctx.settings)
        await self.backend.ensure_image(image, auth)
        environment = {
            "CI": "true",
            "FORNAX_NETWORK": self.network,
            "FORNAX_WORKSPACE": WORKSPACE_MOUNT,
            "FORNAX_VERSION": ctx.version_id,
            "FORNAX_STAGE": self.stage,
            "STEP_NAME": self.stage,
            **env,
        }
        run: dict[str, Any] = {}
        if script is not None:
            run = dict(entrypoint=["/bin/sh", "-c"], command=[script], working_dir=WORKSPACE_MOUNT,
                       binds=self._binds())
        elif service_script:
            run = dict(entrypoint=["/bin/sh", "-c"], command=[C.service_script(service_script)])
        spec = ContainerSpec(
            name=f"fornax-{ctx.version_id}-{suffix}",
            image=image,
            environment=environment,
            labels=labels(
                ctx.version_id,
                stage=self.stage,
                role=role,
                user=ctx.user_id,
                **({"epoch": str(ctx.epoch)} if ctx.epoch is not None else {}),
            ),
            network=self.network,
            memory_mb=self.memory_mb,
            cpu_shares=self.cpu_shares,
            # A fork bomb or a busy loop stays inside its own container.
            pids_limit=ctx.settings.builder_pids_limit,
            nano_cpus=int(ctx.settings.builder_cpus * 1e9),
            alias=alias,
            **run,
        )
        # Shielded: a creation in flight when the stage is stopped still completes, and removes itself.
        task = asyncio.create_task(self._create_and_start(spec))
        self._creating.add(task)
        task.add_done_callback(self._created)
        try:
            return await asyncio.shield(task)
        except BackendError as exc:
            raise StageFailed(f"{self.stage}: could not start {role} container: {exc}") from None

    async def _create_and_start(self, spec: ContainerSpec) -> Container:
        container = await self.backend.create(spec)
        if self._closed:
            await self.backend.remove(container)
            raise StageFailed(f"{self.stage}: stopped")
        self.created.append(container)
        await self.backend.start(container)
        return container

    def _created(self, task: asyncio.Task[Container]) -> None:
        self._creating.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here: the stage may have stopped waiting for it

    def _binds(self) -> list[str]:
        """The workspace at /workspace, plus the step's `volumes` (parts of the workspace only)."""
        workspace = Path(self.ctx.workspace).resolve()
        binds = [f"{workspace}:{WORKSPACE_MOUNT}:rw"]
        for i, (source, target, mode) in enumerate(getattr(self.step, "volumes", ())):
            host = (workspace / source).resolve()
            if host != workspace and workspace not in host.parents:  # a symlink out of the repository
                raise StageFailed(f"{self.stage}: volumes[{i}]: {source} escapes the workspace")
            if not host.is_dir():
                raise StageFailed(f"{self.stage}: volumes[{i}]: {source} is not a directory of the repository")
            binds.append(f"{host}:{target}:{mode}")
        return binds

    async def _copy_output(self, container: Container, path: str) -> None:
        """Copy one pre_build output into the workspace.

        Rule: a relative path, or an absolute one under /workspace, is already in the workspace (the
        bind mount) and stays where it is; any other absolute path is copied to the workspace root
        under its basename (`/root/newfile` → `<workspace>/newfile`, a directory with its content).
        """
        workspace = Path(self.ctx.workspace).resolve()
        if not path.startswith("/") or path == WORKSPACE_MOUNT or path.startswith(WORKSPACE_MOUNT + "/"):
            rel = posixpath.relpath(path, WORKSPACE_MOUNT) if path.startswith("/") else path
            if not (workspace / rel).exists():
                raise StageFailed(f"{self.stage}: output {path} was not produced")
            return
        def extract(spool: Any) -> None:
            spool.seek(0)
            with tarfile.open(fileobj=spool) as tar:
                tar.extractall(workspace, filter="data")  # refuses absolute, `..` and outside links

        try:
            with tempfile.TemporaryFile() as spool:  # outputs may be large: not in memory
                await self.backend.copy_from(container, path, spool)
                await asyncio.to_thread(extract, spool)
        except ObjectNotFound:
            raise StageFailed(f"{self.stage}: output {path} was not found in the container") from None
        except (tarfile.TarError, OSError) as exc:
            raise StageFailed(f"{self.stage}: output {path} could not be copied: {exc}") from None
        await self.ctx.log.write(self.stage, f"copied output {path} → {posixpath.basename(path)}", "system")

    async def remove_all(self, graceful: bool = False) -> None:
        """Remove every container of this stage (after a graceful stop if asked); idempotent. Any
        container whose creation is still in flight removes itself."""
        self._closed = True
        doomed, self.created = self.created, []
        await asyncio.gather(*(self.backend.remove(c, graceful) for c in doomed), *self._creating,
                             return_exceptions=True)
        for task in self.pumps:
            task.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)
