"""The build step: VersionRequested → clone (SourceFetched), config, quota, integration, pre_build,
docker build → ImageBuilt (or VersionSucceeded for a version that builds no image).

A step handler: it emits its stage events, progress events and log lines through the run and returns
the events it ends with; the coordinator publishes them. Everything is named after the version id,
so redoing the step after a crash is harmless.
"""

from __future__ import annotations

import asyncio
from typing import Any

from shared.events import Event, ImageBuilt, SourceFetched, VersionQueued, VersionSucceeded
from shared.events.versions import (
    ImageBuiltPayload,
    SourceFetchedPayload,
    VersionQueuedPayload,
    VersionSucceededPayload,
)

from . import pipeline
from .core import Builder, Cancelled, Failed
from .engine import BuildError, image_name
from .hosts import NoHost
from .pipeline.containers import blocking
from .run import Run
from .vcs import VcsError

REPO_CHECK_WAIT = 10.0


async def _service(b: Builder, run: Run) -> dict[str, Any]:
    service = await b.state.service(run.version["service_id"])
    if service is None or service.get("deleted"):
        raise Failed(f"service {run.version['service_id']} does not exist (deleted?)", "clone")
    waited = 0.0
    while service.get("status") == "accepted" and waited < REPO_CHECK_WAIT:
        await asyncio.sleep(0.25)
        waited += 0.25
        service = await b.state.service(service["_id"]) or service
    status = service.get("status")
    if status in ("missing", "unknownvcs"):
        detail = service.get("status_message") or ""
        raise Failed(f"the repository is not healthy ({status}){': ' + detail if detail else ''}", "clone")
    return service


async def build(b: Builder, run: Run, requested: Event) -> list[Event]:
    """VersionRequested → [ImageBuilt], or [VersionSucceeded] when the version's stages build no image."""
    payload: Any = requested.payload
    run.service = service = await _service(b, run)
    await run.open_log()
    repo = await b.state.repo_spec(service)
    refused = b.url_refused(repo)
    if refused:
        raise Failed(refused, "clone")
    try:
        run.host = await b.hosts.pick(run.vid)
    except NoHost as exc:
        raise Failed(str(exc), "clone") from None
    workspace = b.workspace(run.vid)
    branch = run.version.get("branch") or payload.branch

    async def clone() -> str:
        return await b.vcs.clone(
            repo, workspace, run.version.get("commit") or payload.commit, branch, run.line_writer("clone")
        )

    commit = await run.stage("clone", clone, errors=(VcsError, OSError))
    await run.emit(SourceFetched, SourceFetchedPayload(commit=commit, host=run.host, branch=branch))
    run.version["commit"] = commit

    try:
        config = await pipeline.read_config(workspace, service.get("config_file"), b.settings)
    except pipeline.ConfigError as exc:
        raise Failed(str(exc), "config") from None
    stages = config.stages(run.version.get("operations"))
    await run.write(
        "clone", f"pipeline: {' → '.join(stages)} ({config.source or 'default: root Dockerfile'})", "system"
    )
    _check_images(b, run, config, stages, workspace)
    await _reserve_quota(b, run, config)

    client = b.hosts.client(run.host)
    ctx = pipeline.StageContext(
        backend=pipeline.DockerBackend(client),
        version_id=run.vid,
        user_id=run.version["user_id"],
        workspace=workspace,
        log=await run.open_log(),
        settings=b.settings,
        cancelled=run.active.cancelled,
        deadline=run.deadline,
        epoch=run.active.epoch,
        commit=commit,
        version_name=run.version.get("name"),
        secrets=(await b.state.secrets(service["_id"])).get("values") or {},
    )
    for name in ("integration", "pre_build"):
        if name in stages:

            def step(n: str = name) -> Any:
                return pipeline.run_stage(ctx, config, n)

            await run.stage(name, step)

    if "build" not in stages:  # integration only: nothing to publish
        deploy = config.deploy if "deploy" in stages else []
        return [run.make(VersionSucceeded, VersionSucceededPayload(deploy=deploy))]

    image = image_name(
        b.settings.registry_location, run.version["user_id"], service["name"], run.version["name"]
    )
    memory, cpu = config.container_limits(b.settings)

    async def docker_build() -> str:
        try:
            dockerfile, context = config.dockerfile(workspace)
        except pipeline.ConfigError as exc:
            raise Failed(str(exc)) from None
        if not dockerfile.is_file():
            raise Failed(
                f"Dockerfile not found: {dockerfile.relative_to(workspace.resolve())} "
                "is not in the repository"
            )
        # Again here: pre_build may have written the Dockerfile.
        uses = _check_dockerfile(b, run, dockerfile, workspace)
        await _pull_own(b, run, client, uses)
        network = await blocking(b.network, client, run.vid)
        return await b.images.build(
            client,
            context=context,
            dockerfile=dockerfile,
            image=image,
            labels={"fornax.version": run.vid, "fornax.service": service["_id"]},
            memory_mb=memory,
            cpu_shares=cpu,
            network=network.name,
            cpus=b.settings.builder_cpus,
            on_line=run.line_writer("build"),
        )

    image_id = await run.stage(
        "build", docker_build, timeout=config.timeout("build", b.settings.stage_timeout), errors=(BuildError,)
    )
    return [run.make(ImageBuilt, ImageBuiltPayload(image=image, image_id=image_id, host=run.host))]


def _check_dockerfile(b: Builder, run: Run, dockerfile: Any, workspace: Any) -> list[Any]:
    shown = str(dockerfile.relative_to(workspace.resolve()))
    try:
        return pipeline.check_dockerfile(
            dockerfile, user=run.version["user_id"], settings=b.settings, shown=shown
        )
    except pipeline.ImageRefused as exc:
        raise Failed(str(exc)) from None


def _check_images(b: Builder, run: Run, config: Any, stages: list[str], workspace: Any) -> None:
    """Every image the version would use may be used by its user: else it fails before anything runs."""
    try:
        pipeline.check_config(config, user=run.version["user_id"], settings=b.settings, stages=stages)
    except pipeline.ImageRefused as exc:
        raise Failed(str(exc), "config") from None
    if "build" not in stages:
        return
    try:
        dockerfile, _ = config.dockerfile(workspace)
    except pipeline.ConfigError:
        return  # reported by the build stage
    if dockerfile.is_file():
        try:
            _check_dockerfile(b, run, dockerfile, workspace)
        except Failed as exc:
            raise Failed(exc.reason, "config") from None


async def _pull_own(b: Builder, run: Run, client: Any, uses: list[Any]) -> None:
    """Images of the user's own namespace a Dockerfile reads, pulled with explicit credentials (the
    build itself sends none)."""
    for use in uses:
        auth = pipeline.pull_auth(use.image, user=run.version["user_id"], settings=b.settings)
        if auth is None:
            continue
        try:
            await blocking(pipeline.ensure_image, client, use.image, auth)
        except pipeline.StageFailed as exc:
            raise Failed(str(exc)) from None


async def _reserve_quota(b: Builder, run: Run, config: Any) -> None:
    memory, cpu = config.demand(b.settings)

    async def on_wait(reason: str) -> None:
        await run.write("clone", reason, "system")
        await run.emit(VersionQueued, VersionQueuedPayload(reason=reason))

    try:
        got = await b.quotas.acquire(
            run.version["user_id"],
            run.vid,
            memory,
            cpu,
            on_wait=on_wait,
            cancelled=run.active.cancelled,
            deadline=run.deadline,
        )
    except pipeline.QuotaExceeded as exc:
        raise Failed(str(exc), "quota") from None
    if not got:
        if run.active.cancelled.is_set():
            raise Cancelled()
        raise Failed("timed out waiting for quota", "quota")
