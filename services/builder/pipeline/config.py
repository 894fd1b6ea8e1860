"""The config file (fornax.yml / caicloud.yml): its pydantic models (loading: config_load.py; field values:
config_fields.py).

Schema (DESIGN §4) plus two documented additions:
- `timeout: <seconds>` on integration, pre_build, build and post_build overrides settings.stage_timeout
  for that stage (it can only be shorter than settings.version_timeout in effect).
- top-level `resources: {memory: <MiB>, cpu: <shares>}` asks for more than the per-container defaults
  (settings.memory_for_container / cpu_for_container); smaller values are raised to the defaults.
  The version's whole demand (see `PipelineConfig.demand`) must fit the user's quota.
- `build.context: <dir>` overrides the build context (default: the Dockerfile's directory).

Paths: `build.dockerfile_path` / `build.context` are inside the repository (relative to its root, or
absolute under the container path /workspace); anything that leaves the workspace is refused.
`outputs` are container paths (relative ones are relative to /workspace, the working directory); see
runner.copy_outputs for where each lands.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from shared.events.versions import DeploySpec

from .config_fields import (
    _COMMANDS_ALIASES,
    _ENV_ALIASES,
    _environment,
    _inside,
    _refused,
    _scalar_text,
    _seed_spellings,
    _volume,
)

STAGE_ORDER = ("integration", "pre_build", "build", "push", "tag", "post_build", "deploy")
_SERVICE_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")


class ConfigError(ValueError):
    """The config file is invalid; the message names the file, the line and the key path."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        super().__init__(message)
        self.file, self.line, self.key = file, line, key


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    image: str = Field(min_length=1)
    environment: dict[str, str] = Field(default_factory=dict, validation_alias=_ENV_ALIASES)
    commands: list[str] = Field(min_length=1, validation_alias=_COMMANDS_ALIASES)
    timeout: float | None = Field(None, gt=0)
    # (workspace-relative source, container path, mode): extra mounts of the repository
    volumes: list[Annotated[tuple[str, str, str], BeforeValidator(_volume)]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _seed(cls, data: Any) -> Any:
        return _seed_spellings(data)

    @field_validator("volumes", mode="before")
    @classmethod
    def _no_volumes(cls, v: Any) -> Any:
        return [] if v is None else v

    @field_validator("volumes")
    @classmethod
    def _distinct(cls, v: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        targets = [t for _, t, _ in v]
        if len(set(targets)) != len(targets):
            raise ValueError("two volumes have the same container path")
        return v

    @field_validator("environment", mode="before")
    @classmethod
    def _env(cls, v: Any) -> dict[str, str]:
        return _environment(v)

    @field_validator("commands", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any) -> Any:
        # `- true` or `- 42` are commands too; a mapping (`- echo: x`, a YAML gotcha) stays an error.
        v = _refused(v)
        if isinstance(v, list):
            return [_scalar_text(c) for c in v]
        return [] if v is None else v

    @field_validator("commands")
    @classmethod
    def _non_blank(cls, v: list[str]) -> list[str]:
        for i, cmd in enumerate(v):
            if not cmd.strip():
                raise ValueError(f"command {i} is empty")
        return v


class ServiceSpec(_Strict):
    """A service container of the integration stage, reachable by its name."""

    image: str = Field(min_length=1)
    environment: dict[str, str] = Field(default_factory=dict, validation_alias=_ENV_ALIASES)
    commands: list[str] | None = Field(None, min_length=1, validation_alias=_COMMANDS_ALIASES)

    @model_validator(mode="before")
    @classmethod
    def _seed(cls, data: Any) -> Any:
        return _seed_spellings(data)

    @field_validator("commands", mode="before")
    @classmethod
    def _texts(cls, v: Any) -> Any:
        v = _refused(v)
        return [_scalar_text(c) for c in v] if isinstance(v, list) else v

    @field_validator("environment", mode="before")
    @classmethod
    def _env(cls, v: Any) -> dict[str, str]:
        return _environment(v)


class JenkinsCredentials(_Strict):
    """Names of the service's secrets (not the values): the Jenkins user and its API token."""

    user: str = Field(min_length=1)
    token: str = Field(min_length=1)


class Jenkins(_Strict):
    """`integration.jenkins`: run the integration as a Jenkins job (see pipeline/jenkins.py)."""

    server: str = Field(min_length=1)
    job: str = Field(min_length=1)
    credentials: JenkinsCredentials | None = None
    unstable_passes: bool = False  # an UNSTABLE build counts as passed

    @field_validator("server")
    @classmethod
    def _server(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", v):
            raise ValueError(f"{v!r} must be an http(s) URL of a Jenkins server")
        return v.rstrip("/")

    @field_validator("job")
    @classmethod
    def _job(cls, v: str) -> str:
        parts = v.strip("/").split("/")
        if any(not p or p in (".", "..") or any(c in p for c in "?#%\\") for p in parts):
            raise ValueError(f"{v!r} must be a job name, or folder/…/job")
        return "/".join(parts)


class Integration(Step):
    services: dict[str, ServiceSpec] = Field(default_factory=dict)
    jenkins: Jenkins | None = None
    # Optional here: a Jenkins integration runs no container (checked below).
    image: str | None = Field(None, min_length=1)  # type: ignore[assignment]
    commands: list[str] = Field(default_factory=list, min_length=1,  # type: ignore[assignment]
                                validation_alias=_COMMANDS_ALIASES)

    @model_validator(mode="after")
    def _container_or_jenkins(self) -> Integration:
        if self.jenkins is not None:
            given = [k for k in ("image", "commands", "services", "volumes") if k in self.model_fields_set]
            if given:
                raise ValueError(f"`jenkins` runs the integration in Jenkins: {', '.join(given)} "
                                 "cannot be given with it")
        else:
            for key in ("image", "commands"):
                if key not in self.model_fields_set:
                    raise ValueError(f"{key}: field required (or `jenkins`)")
        return self

    @field_validator("services", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for name in v:
                if not _SERVICE_NAME.match(str(name)):
                    raise ValueError(f"service name {name!r} must be a DNS label (a-z, 0-9, -, _)")
        return {} if v is None else v


class PreBuild(Step):
    outputs: list[str] = Field(default_factory=list)

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, v: list[str]) -> list[str]:
        out = []
        for path in v:
            if not path.strip():
                raise ValueError("an output path must not be empty")
            norm = posixpath.normpath(path)
            if not norm.startswith("/"):
                norm = _inside(norm, "output")
            if norm in ("/", "."):
                raise ValueError(f"{path!r} names a whole file system or the workspace itself")
            out.append(norm)
        return out


class PostBuild(Step):
    pass


class Build(_Strict):
    dockerfile_path: str = "Dockerfile"
    context: str | None = None
    timeout: float | None = Field(None, gt=0)

    @field_validator("dockerfile_path")
    @classmethod
    def _dockerfile(cls, v: str) -> str:
        return _inside(v, "dockerfile_path")

    @field_validator("context")
    @classmethod
    def _context(cls, v: str | None) -> str | None:
        return None if v is None else _inside(v, "context")


class Resources(_Strict):
    memory: int | None = Field(None, gt=0, description="MiB per container")
    cpu: int | None = Field(None, gt=0, description="CPU shares per container")


class _Deploy(_Strict):
    cluster: str = Field(min_length=1)
    partition: str | None = None


def _one_app(item: dict[str, _Deploy]) -> dict[str, _Deploy]:
    if len(item) != 1:
        raise ValueError("each deploy item maps exactly one application name to {cluster, partition}")
    return item


class PipelineConfig(_Strict):
    integration: Integration | None = None
    pre_build: PreBuild | None = None
    build: Build = Field(default_factory=lambda: Build(timeout=None))
    post_build: PostBuild | None = None
    deploy_items: list[Annotated[dict[str, _Deploy], AfterValidator(_one_app)]] = Field(
        default_factory=list, alias="deploy")
    resources: Resources = Field(default_factory=lambda: Resources(memory=None, cpu=None))
    _source: str | None = PrivateAttr(None)  # the file it was read from (None: the default config)

    @property
    def source(self) -> str | None:
        return self._source

    @field_validator("deploy_items", mode="before")
    @classmethod
    def _no_deploys(cls, v: Any) -> Any:
        return [] if v is None else v

    @property
    def deploy(self) -> list[DeploySpec]:
        """The `deploy` section as DeploySpec items, in file order."""
        return [DeploySpec(application=app, cluster=d.cluster, partition=d.partition)
                for item in self.deploy_items for app, d in item.items()]

    # -- what to run -----------------------------------------------------------------------------
    def stages(self, operations: list[str] | None = None) -> list[str]:
        """Ordered stage names for the version's operations (None: all the config defines + publish)."""
        ops = set(operations) if operations is not None else {"integration", "publish", "deploy"}
        wanted: list[str] = []
        if "integration" in ops and self.integration is not None:
            wanted.append("integration")
        if "publish" in ops:
            if self.pre_build is not None:
                wanted.append("pre_build")
            wanted += ["build", "push", "tag"]
            if self.post_build is not None:
                wanted.append("post_build")
        if "deploy" in ops and (operations is not None or self.deploy):
            wanted.append("deploy")
        return wanted

    def step(self, stage: str) -> Step | None:
        """The container step of a stage (integration, pre_build, post_build), if configured."""
        return {"integration": self.integration, "pre_build": self.pre_build,
                "post_build": self.post_build}.get(stage)

    def dockerfile(self, workspace: Path) -> tuple[Path, Path]:
        """(Dockerfile, build context dir), both checked to stay inside the workspace (symlinks too)."""
        root = Path(workspace).resolve()
        dockerfile = (root / self.build.dockerfile_path).resolve()
        context = (root / self.build.context).resolve() if self.build.context else dockerfile.parent
        for what, p in (("build.dockerfile_path", dockerfile), ("build.context", context)):
            if p != root and root not in p.parents:
                raise ConfigError(f"{self.source or 'config'}: {what}: {p} escapes the workspace",
                                  file=self.source, key=what)
        return dockerfile, context

    def timeout(self, stage: str, default: float) -> float:
        """The stage's own `timeout:` or the settings default."""
        spec = self.build if stage == "build" else self.step(stage)
        own = getattr(spec, "timeout", None) if spec is not None else None
        return float(own) if own else default

    def container_limits(self, settings: Any) -> tuple[int, int]:
        """(memory MiB, CPU shares) for every container of this version."""
        mem = max(settings.memory_for_container, self.resources.memory or 0)
        cpu = max(settings.cpu_for_container, self.resources.cpu or 0)
        return mem, cpu

    def demand(self, settings: Any) -> tuple[int, int]:
        """What the version reserves from its user's quota: per-container limits times the most
        containers it runs at once (the integration stage: its services plus the CI container)."""
        mem, cpu = self.container_limits(settings)
        most = 1 + (len(self.integration.services) if self.integration is not None else 0)
        return mem * most, cpu * most
