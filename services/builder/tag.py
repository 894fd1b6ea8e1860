"""The last two steps: tag (ImagePushed → tag the commit with the version name → VersionTagged) and
finish (post_build → VersionSucceeded with the pushed image).

Tagging is idempotent (the same tag at the same commit is fine), so a repeated ImagePushed redoes
nothing harmful. The workspace is re-cloned when this process did not build the version itself.
"""

from __future__ import annotations

from typing import Any

from shared.events import Event, VersionSucceeded, VersionTagged
from shared.events.versions import VersionSucceededPayload, VersionTaggedPayload

from . import pipeline
from .core import Builder, Failed
from .run import Run
from .vcs import VcsError

TAG_TIMEOUT = 300.0


async def tag(b: Builder, run: Run, pushed: Event) -> list[Event]:
    """ImagePushed → [VersionTagged]."""
    version = run.version
    service = await b.state.service(version["service_id"])
    if service is None:
        raise Failed(f"service {version['service_id']} does not exist (deleted?)", "tag")
    run.service = service
    repo = await b.state.repo_spec(service)
    refused = b.url_refused(repo)
    if refused:
        raise Failed(refused, "tag")
    await run.open_log()
    workspace = b.workspace(run.vid)
    commit = version.get("commit")
    if not commit:  # the read model lags behind SourceFetched: wait for it
        doc = await b.state.wait_version(run.vid, 10.0, until=lambda d: bool(d.get("commit")))
        commit = (doc or {}).get("commit")
    if not commit:
        raise Failed("the version has no resolved commit to tag", "tag")

    async def vcs_tag() -> None:
        if not workspace.is_dir():
            await b.vcs.clone(repo, workspace, commit, version.get("branch"), run.line_writer("tag"))
        await b.vcs.tag(repo, workspace, version["name"], commit, run.line_writer("tag"))

    await run.stage("tag", vcs_tag, timeout=TAG_TIMEOUT, errors=(VcsError, OSError))
    return [run.make(VersionTagged, VersionTaggedPayload(tag=version["name"], commit=commit))]


async def finish(b: Builder, run: Run, pushed: Event) -> list[Event]:
    """post_build (if the config has it) → [VersionSucceeded] naming the pushed image."""
    p: Any = pushed.payload
    version = run.version
    service = run.service or await b.state.service(version["service_id"]) or {}
    workspace = b.workspace(run.vid)
    try:
        config = await pipeline.read_config(workspace, service.get("config_file"), b.settings)
    except pipeline.ConfigError as exc:
        raise Failed(str(exc), "config") from None
    stages = config.stages(version.get("operations"))
    if "post_build" in stages:
        host = version.get("host") or b.hosts.hosts[0]
        run.host = host
        ctx = pipeline.StageContext(
            backend=pipeline.DockerBackend(b.hosts.client(host)),
            version_id=run.vid,
            user_id=version["user_id"],
            workspace=workspace,
            log=await run.open_log(),
            settings=b.settings,
            cancelled=run.active.cancelled,
            deadline=run.deadline,
            epoch=run.active.epoch,
        )
        await run.stage("post_build", lambda: pipeline.run_stage(ctx, config, "post_build"))

    deploy = config.deploy if "deploy" in stages else []
    await run.write("tag", f"version {version['name']} succeeded: {p.image}@{p.digest}", "system")
    return [run.make(VersionSucceeded, VersionSucceededPayload(image=p.image, digest=p.digest, deploy=deploy))]
