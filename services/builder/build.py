"""VersionRequested → clone (SourceFetched), config, quota, integration, pre_build, docker build (ImageBuilt).

Idempotent: a terminal version is skipped, a version whose image is already built is left to the
push step (its ImageBuilt is in the log), a version another live worker is building is waited for
(and taken over if that worker's heartbeat stops), and everything is named after the version id,
so redoing a step after a crash is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from shared.events import Event, ImageBuilt, SourceFetched, VersionQueued, VersionSucceeded, utcnow
from shared.events.versions import (
    ImageBuiltPayload,
    SourceFetchedPayload,
    VersionQueuedPayload,
    VersionSucceededPayload,
)
from shared.status import VERSION_TERMINAL_STATUSES

from . import pipeline
from .core import Builder, Failed
from .engine import BuildError, image_name
from .hosts import NoHost
from .pipeline.containers import blocking
from .run import Run, run_guarded
from .vcs import VcsError

log = logging.getLogger(__name__)
PROJECTION_WAIT = 10.0
REPO_CHECK_WAIT = 10.0


async def acquire_version(
    b: Builder, vid: str, *, skip: Any = None, fallback: dict[str, Any] | None = None
) -> tuple[dict[str, Any], Any] | None:
    """Read the version, skip it if finished (or `skip(doc)`) or already worked on here, and own it:
    (doc, Active) or None. `fallback` (from the event) stands in while the read model lags."""
    doc = await b.state.version(vid)
    if doc is None:
        doc = fallback or await b.state.wait_version(vid, PROJECTION_WAIT)
    if doc is None:
        log.warning("version %s: not in the read model after %ss; skipped", vid, PROJECTION_WAIT)
        return None
    if doc.get("status") in VERSION_TERMINAL_STATUSES or (skip is not None and skip(doc)):
        return None
    # Being worked on here already: the running chain (build → push → tag) covers this step too,
    # or this is a repeated delivery.
    active = b.begin(vid)
    if active is None:
        return None
    try:
        waiting = False
        while not (epoch := await b.state.claim(vid)):
            hb = await b.state.heartbeat(vid) or {}
            if hb.get("state") == "done":  # it ended (its end is on its way to the read model): a repeated delivery
                b.end(vid)
                return None
            if not waiting:
                log.info(
                    "version %s: owned by %s; waiting (taken over if its heartbeat stops)",
                    vid,
                    hb.get("worker"),
                )
                waiting = True
            # Another live worker has it (e.g. partitions moved while it builds): wait, take over if it dies.
            await asyncio.sleep(2.0)
            doc = await b.state.version(vid) or doc
            if doc.get("status") in VERSION_TERMINAL_STATUSES or (skip is not None and skip(doc)):
                b.end(vid)
                return None
    except BaseException:
        b.end(vid)
        raise
    active.epoch = epoch
    return doc, active


def _built(doc: dict[str, Any]) -> bool:
    return bool(doc.get("image_id")) and (doc.get("stages") or {}).get("build", {}).get("status") == "success"


def _from_request(event: Event) -> dict[str, Any]:
    p: Any = event.payload
    return {
        "_id": event.aggregate_id,
        "status": "pending",
        "stages": {},
        "service_id": p.service_id,
        "user_id": p.user_id,
        "name": p.name,
        "description": p.description,
        "commit": p.commit,
        "branch": p.branch,
        "trigger": p.trigger,
        "operations": p.operations,
    }


async def run_owned(
    b: Builder,
    event: Event,
    step: Callable[[Run], Awaitable[None]],
    *,
    skip: Any = None,
    fallback: dict[str, Any] | None = None,
) -> None:
    """Own the event's version (or return if finished / worked on here), run `step` guarded, release."""
    if await _from_lost_claim(b, event):
        return
    owned = await acquire_version(b, event.aggregate_id, skip=skip, fallback=fallback)
    if owned is None:
        return
    doc, active = owned
    log.info(
        "version %s: %s (status %s, %.3fs after the event)",
        event.aggregate_id,
        event.type,
        doc.get("status"),
        (utcnow() - event.occurred_at).total_seconds(),
    )
    run = Run(b, event, doc, active)
    ended = False
    try:
        crashes = await b.state.start_attempt(run.vid) - 1
        if crashes >= b.settings.builder_max_crashes:
            step = _poisoned(crashes)
        await run_guarded(b, run, step)
        ended = True
    finally:
        b.end(run.vid, finished=ended)


def _poisoned(crashes: int) -> Callable[[Run], Awaitable[None]]:
    """The step for a version whose processing killed its worker `crashes` times: fail it, so one
    hostile version cannot take the builders down again and again."""

    async def fail(run: Run) -> None:
        reason = (f"processing this version stopped its builder {crashes} times "
                  "(limit builder_max_crashes); it is not retried")
        stages = run.version.get("stages") or {}
        running = [name for name, st in stages.items() if (st or {}).get("status") == "running"]
        for name in running:
            await run.finish(name, "failed", reason)
        raise Failed(reason, running[-1] if running else None)

    return fail


async def _from_lost_claim(b: Builder, event: Event) -> bool:
    """The event is a result of a builder whose claim was taken over since (a newer epoch exists)."""
    epoch = getattr(event.payload, "epoch", None)
    if epoch is None:
        return False
    hb = await b.state.heartbeat(event.aggregate_id) or {}
    if int(hb.get("epoch") or 0) > epoch:
        log.warning("version %s: %s from lost claim epoch %s ignored", event.aggregate_id, event.type, epoch)
        return True
    return False


async def on_version_requested(b: Builder, event: Event) -> None:
    await run_owned(
        b, event, lambda r: build_version(b, r, event), skip=_built, fallback=_from_request(event)
    )


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


async def build_version(b: Builder, run: Run, event: Event) -> None:
    payload: Any = event.payload
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
        await run.teardown()
        if await run.still_wanted():
            await run.emit(VersionSucceeded, VersionSucceededPayload(deploy=deploy))
        return

    image = image_name(
        b.settings.registry_location, run.version["user_id"], service["name"], run.version["name"]
    )
    memory, cpu = config.container_limits(b.settings)

    async def build() -> str:
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
        network = await blocking(pipeline.ensure_network, client, run.vid)
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
        "build", build, timeout=config.timeout("build", b.settings.stage_timeout), errors=(BuildError,)
    )
    built = run.make(ImageBuilt, ImageBuiltPayload(image=image, image_id=image_id, host=run.host))
    await run.publish_once(built)
    # Go on with push and tag right here (one broker round trip less per step). Their agents skip
    # the events while this version is active here, and handle them after a crash or a takeover.
    from .push import push_image

    run.cause = built
    await push_image(b, run, built)


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
        got = await pipeline.acquire(
            b.store,
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
            from .core import Cancelled

            raise Cancelled()
        raise Failed("timed out waiting for quota", "quota")
