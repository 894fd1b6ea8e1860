"""The config-file pipeline (fornax.yml / caicloud.yml): parsing and container stages.

CONTRACT between the builder agents (services/builder/*.py) and this package — keep these names:

    from services.builder.pipeline import load_config, ConfigError, PipelineConfig
    from services.builder.pipeline import StageContext, run_stage, StageFailed, cleanup_version

- load_config(workspace: Path, configured_name: str | None = None) -> PipelineConfig
    Reads `configured_name`, else fornax.yml, else caicloud.yml from the workspace root; with no
    file returns the default config (build the root Dockerfile and push). Raises ConfigError whose
    message names the key and the line, e.g. "fornax.yml line 4: integration.commands: ...".
- PipelineConfig.stages(operations: list[str] | None) -> list[str]
    The ordered stage names to run, from
    ["integration", "pre_build", "build", "push", "tag", "post_build", "deploy"], selected by the
    version's operations (None = every stage the config defines, publish always on).
- PipelineConfig.dockerfile(workspace: Path) -> tuple[Path, Path]   (dockerfile, context dir)
- PipelineConfig.deploy -> list[DeploySpec]     (shared.events.versions.DeploySpec)
- StageContext: dataclass(docker (docker.DockerClient), version_id, user_id, workspace: Path,
    log (shared.logwriter.LogWriter), settings, cancelled: asyncio.Event, memory_mb, cpu_shares)
- async run_stage(ctx, config, stage) -> None     for "integration" | "pre_build" | "post_build":
    creates the version network (named and labelled after the version) if missing, starts service
    containers, runs the commands (sh -e, echoed as "$ cmd" into the log), copies `outputs` back
    into the workspace; raises StageFailed(message with exit code and last lines) or
    StageFailed("timed out") / StageFailed("cancelled"). Removes its own containers when done.
- cleanup_version(docker, version_id) -> None    removes every container and network labelled
    fornax.version=<version_id> (safe to call many times, and when nothing exists).
"""
