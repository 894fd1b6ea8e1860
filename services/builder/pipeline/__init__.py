"""The config-file pipeline (fornax.yml / caicloud.yml): parsing and container stages.

CONTRACT between the builder agents (services/builder/*.py) and this package — keep these names:

    from services.builder.pipeline import load_config, ConfigError, PipelineConfig
    from services.builder.pipeline import StageContext, run_stage, StageFailed, cleanup_version
    from services.builder.pipeline import ContainerBackend, DockerBackend

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
- StageContext: dataclass(backend (ContainerBackend: DockerBackend(docker client) in production),
    version_id, user_id, workspace: Path, log (shared.logwriter.LogWriter), settings,
    cancelled: asyncio.Event, memory_mb, cpu_shares)
- ContainerBackend (backend.py): the port the runner runs containers through — ensure_network,
    ensure_image, create(ContainerSpec)/start, output (chunks), wait, oom_killed, copy_from, remove,
    cleanup. The runner fills the ContainerSpec (network, limits, labels, binds); a backend carries it
    out and reports refusals as BackendError (ObjectNotFound for a missing container or path).
- async run_stage(ctx, config, stage) -> None     for "integration" | "pre_build" | "post_build":
    creates the version network (named and labelled after the version) if missing, starts service
    containers, runs the commands (sh -e, echoed as "$ cmd" into the log), copies `outputs` back
    into the workspace; raises StageFailed(message with exit code and last lines) or
    StageFailed("timed out") / StageFailed("cancelled"). Removes its own containers when done.
- cleanup_version(docker, version_id, epoch=None) -> None    removes every container and network
    labelled fornax.version=<version_id> (safe to call many times, and when nothing exists); with
    `epoch`, only the containers also labelled fornax.epoch=<epoch> (StageContext.epoch), no network.

Also part of the contract:
- StageFailed.kind: "failed" | "timed_out" | "cancelled"; StageFailed.exit_code (int | None).
  Messages: "<stage>: command `<cmd>` exited with code N; last lines:\n...", "<stage> timed out
  after Ns", "cancelled".
- StageContext.deadline: float | None = None — a time.monotonic() value (version start +
  settings.version_timeout); a stage gets min(its own timeout, what is left). memory_mb/cpu_shares
  may be None: then config.container_limits(settings) applies.
- PipelineConfig.timeout(stage, default) -> float   `timeout:` of integration|pre_build|build|
  post_build in the file, else `default` (settings.stage_timeout) — use it for the build stage too.
- PipelineConfig.container_limits(settings) -> (memory MiB, cpu shares) per container: settings
  memory_for_container/cpu_for_container, raised by the file's top-level
  `resources: {memory: <MiB>, cpu: <shares>}`.
- PipelineConfig.demand(settings) -> (memory MiB, cpu shares) to reserve for the whole version:
  container_limits × the most containers it runs at once (1 + number of integration services).
- PipelineConfig.source -> "fornax.yml" | "caicloud.yml" | <configured name> | None (default config).
- PipelineConfig.build.context: optional `build: {context: <dir>}` overriding the build context.
- Quota (services.builder.pipeline.quota, re-exported here):
    async reserve(store, user_id, version_id, memory_mb, cpu) -> bool   True = reserved (or already
        was), False = must wait (emit VersionQueued(reason) and retry); raises QuotaExceeded at once
        when the demand exceeds settings.memory_for_user/cpu_for_user (fail the version with str(exc)).
    async release(store, user_id, version_id) -> bool   idempotent; call when the version ends.
    async acquire(store, user_id, version_id, memory_mb, cpu, *, on_wait=None, cancelled=None,
        poll=0.5, deadline=None) -> bool   the retry loop: awaits on_wait(reason) once when it first
        has to wait; False if cancelled/deadline first; QuotaExceeded as above.
  Atomic across builder processes (one find_one_and_update with a guarded filter and $inc on
  `store.quotas`); reservations of versions already ended are reclaimed when someone must wait.
- Paths: `dockerfile_path`/`context` relative to the repository root (or absolute under
  /workspace); `outputs` are container paths: relative (to /workspace) or under /workspace stay where
  they are; any other absolute path is copied to <workspace>/<basename>.
- Images (services.builder.pipeline.images): check_config / check_dockerfile / check_image raise
  ImageRefused naming the image (and key or Dockerfile line) unless it is under one of
  settings.builder_allowed_images or the user's own `<registry>/<user>/`; pull_auth gives registry
  credentials for the user's own namespace only; ensure_image(client, image, auth) pulls only with them.
- Every step container gets env CI=true, FORNAX_NETWORK, FORNAX_WORKSPACE=/workspace,
  FORNAX_VERSION, FORNAX_STAGE, STEP_NAME=<stage> (the file's `environment` overrides them).
- async read_config(workspace, configured_name, settings) -> PipelineConfig   load_config with
    settings.config_max_bytes / config_max_nodes / config_parse_timeout, in a worker thread; the
    agents use this one (a hostile file fails the version with "<name>: <limit exceeded>").
- The seed's spellings: `env`/`command`/`volumes` (Step.volumes: (workspace source, container path,
  mode) — extra binds of the repository only). `integration.jenkins` (config.Jenkins): run_stage runs
  the integration as a Jenkins job (pipeline.jenkins.run_job); it needs StageContext.commit,
  version_name and secrets (the service's secrets by name) and settings.jenkins_servers.
"""

from .backend import BackendError, ContainerBackend, ContainerSpec, ObjectNotFound
from .config import ConfigError, PipelineConfig
from .config_load import CONFIG_FILES, load_config, parse_config, read_config
from .docker_backend import DockerBackend, cleanup_version, ensure_image, ensure_network
from .errors import StageFailed
from .images import ImageRefused, check_config, check_dockerfile, check_image, pull_auth
from .network import network_name
from .quota import QuotaExceeded, acquire, release, reserve
from .runner import CONTAINER_STAGES, StageContext, run_stage

__all__ = [
    "BackendError", "CONFIG_FILES", "CONTAINER_STAGES", "ContainerBackend", "ContainerSpec", "DockerBackend",
    "ObjectNotFound", "ConfigError", "PipelineConfig", "QuotaExceeded", "StageContext",
    "StageFailed", "acquire", "cleanup_version", "load_config", "network_name", "parse_config", "read_config",
    "release", "reserve", "run_stage",
    "ImageRefused", "check_config", "check_dockerfile", "check_image", "ensure_image", "ensure_network",
    "pull_auth",
]
