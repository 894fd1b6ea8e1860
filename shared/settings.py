"""One settings tree for every Fornax process: FORNAX_* env vars, the original names as aliases."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict


def _alias(name: str, *originals: str) -> AliasChoices:
    return AliasChoices(f"FORNAX_{name.upper()}", name, *originals)


class KubernetesCluster(BaseModel):
    """A Kubernetes deploy target; credentials stay on the server."""

    # In a pod: the ServiceAccount's token and CA (infra/k8s/rbac.yaml grants what the deployer needs).
    in_cluster: bool = False
    kubeconfig: str | None = None
    context: str | None = None
    api_url: str | None = None
    token: SecretStr | None = None
    ca_file: str | None = None
    verify_ssl: bool = True
    # Namespaces Fornax may deploy into (shell-style globs, `{user}` = the user id; shared/namespaces.py):
    # for every user, and extra ones per user id.
    namespaces: list[str] = Field(default_factory=lambda: ["default"])
    user_namespaces: dict[str, list[str]] = Field(default_factory=dict)


class DockerTarget(BaseModel):
    """A plain Docker host deploy target."""

    base_url: str = "unix:///var/run/docker.sock"
    ports: dict[str, int] = Field(default_factory=dict)  # "8080/tcp" -> host port
    environment: dict[str, str] = Field(default_factory=dict)
    # How long a new container must keep running (no restart) before it counts as deployed.
    settle_seconds: float = Field(0.5, ge=0)
    # Grace period (SIGTERM -> SIGKILL) when an old container must stop first (fixed host ports).
    stop_seconds: int = Field(10, ge=0)


class OAuthApp(BaseModel):
    """An OAuth application registered with a code host (GitHub or GitLab), for private repositories."""

    client_id: str
    client_secret: SecretStr
    authorize_url: str  # e.g. https://github.com/login/oauth/authorize, https://gitlab.com/oauth/authorize
    token_url: str  # e.g. https://github.com/login/oauth/access_token, https://gitlab.com/oauth/token
    api_url: str  # e.g. https://api.github.com, https://gitlab.com/api/v4
    scope: str = ""  # default: "repo" (GitHub), "api" (GitLab)


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the optional settings file named by FORNAX_SETTINGS_FILE."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("FORNAX_SETTINGS_FILE")
        if not path:
            return {}
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"settings file {path}: top level must be a mapping")
        return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, case_sensitive=False)

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:9092", validation_alias=_alias("kafka_bootstrap", "KAFKA_SERVER_IP"))
    topic_prefix: str = Field("fornax", validation_alias=_alias("topic_prefix"))
    topic_partitions: int = Field(4, ge=1, validation_alias=_alias("topic_partitions"))
    # MongoDB
    mongo_url: str = Field("mongodb://127.0.0.1:27017", validation_alias=_alias("mongo_url", "MONGO_DB_IP"))
    mongo_db: str = Field("fornax", validation_alias=_alias("mongo_db"))
    # Docker hosts for builds (a pool; builds go to the least loaded)
    docker_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["unix:///var/run/docker.sock"],
        validation_alias=_alias("docker_hosts", "DOCKER_HOST"),
    )
    docker_cert_path: str | None = Field(None, validation_alias=_alias("docker_cert_path", "DOCKER_CERT_PATH"))
    # Registry
    registry_location: str = Field("127.0.0.1:5000", validation_alias=_alias("registry_location", "REGISTRY_LOCATION"))
    registry_username: str = Field("admin", validation_alias=_alias("registry_username", "REGISTRY_USERNAME"))
    registry_password: SecretStr = Field(
        SecretStr("admin_password"), validation_alias=_alias("registry_password", "REGISTRY_PASSWORD")
    )
    enable_caicloud_auth: bool = Field(False, validation_alias=_alias("enable_caicloud_auth", "ENABLE_CAICLOUD_AUTH"))
    # Resources (MiB and CPU shares)
    memory_for_container: int = Field(128, ge=4, validation_alias=_alias("memory_for_container", "MEMORYFORCONTAINER"))
    cpu_for_container: int = Field(128, ge=2, validation_alias=_alias("cpu_for_container", "CPUFORCONTAINER"))
    memory_for_user: int = Field(1024, ge=4, validation_alias=_alias("memory_for_user", "MEMORYFORUSER"))
    cpu_for_user: int = Field(1024, ge=2, validation_alias=_alias("cpu_for_user", "CPUFORUSER"))
    stage_timeout: float = Field(1800.0, gt=0, validation_alias=_alias("stage_timeout"))
    version_timeout: float = Field(3600.0, gt=0, validation_alias=_alias("version_timeout"))
    # Processes
    gateway_host: str = Field("127.0.0.1", validation_alias=_alias("gateway_host"))
    gateway_port: int = Field(7099, validation_alias=_alias("gateway_port"))
    logstream_host: str = Field("127.0.0.1", validation_alias=_alias("logstream_host"))
    logstream_port: int = Field(8000, validation_alias=_alias("logstream_port"))
    data_dir: Path = Field(Path(".fornax"), validation_alias=_alias("data_dir"))
    workspace_root: Path | None = Field(None, validation_alias=_alias("workspace_root"))
    max_body_bytes: int = Field(5 * 1024 * 1024, validation_alias=_alias("max_body_bytes"))
    idle_timeout: float = Field(120.0, gt=0, validation_alias=_alias("idle_timeout"))
    # How long the logstream's live tail lets the broker hold a fetch that finds nothing new (ms). A broker
    # that answers a long-poll as soon as data arrives (Kafka) costs nothing here; Tansu holds every fetch
    # for this long, and on its S3 storage a short wait floods it with fetches that each read the store
    # (measured: 10 ms gave p99 73 s behind at 1,000 lines/s, 40 ms p99 0.14 s). The durable local stack
    # sets 40.
    log_fetch_wait_ms: int = Field(10, ge=1, le=5000, validation_alias=_alias("log_fetch_wait_ms"))
    # The same for the logstream's archiver (it writes the lines to Mongo and commits as a group).
    log_archive_fetch_wait_ms: int = Field(50, ge=1, le=5000, validation_alias=_alias("log_archive_fetch_wait_ms"))
    # How often a build's log writer publishes what it has queued (one record batch per flush). Tansu on S3
    # stores each batch as an object and lists a partition's objects on every fetch: the durable local
    # stack sets 50 (docs/logstream.md).
    log_flush_ms: int = Field(10, ge=1, le=5000, validation_alias=_alias("log_flush_ms"))
    # The same for the Faust workers' consumers (Faust's own value is 1,500 ms; shared/faust_app.py).
    faust_fetch_wait_ms: int = Field(100, ge=1, le=5000, validation_alias=_alias("faust_fetch_wait_ms"))
    # A consumer handed a batch that starts past its fetch offset (a batch below it still being written:
    # shared/fetch_holes.py) fetches again for up to this many seconds before it reads on; 0: off.
    fetch_hole_wait: float = Field(2.0, ge=0, le=60, validation_alias=_alias("fetch_hole_wait"))
    # How often a Faust worker commits its consumer offsets: after this many events, and at least every
    # `faust_commit_interval` seconds. Each commit writes every changed partition's offset, and on Tansu's
    # S3 storage each is an object put (about 2.5 ms of the store's CPU); committing after every event
    # made as many commits as produces. Events replayed after a crash are handled idempotently (by event
    # id and claim), so a longer interval only means more replay. The durable local stack sets 200 / 2.
    faust_commit_every: int = Field(1, ge=1, validation_alias=_alias("faust_commit_every"))
    faust_commit_interval: float = Field(0.5, gt=0, le=60, validation_alias=_alias("faust_commit_interval"))
    # Lines buffered per log subscriber before it counts as too slow and is closed (it resumes with since).
    logstream_queue_lines: int = Field(10000, ge=10, validation_alias=_alias("logstream_queue_lines"))
    # Bytes a caught-up subscriber's connection may have waiting to be sent before it counts as too slow.
    logstream_buffer_bytes: int = Field(
        4 * 1024 * 1024, ge=64 * 1024, validation_alias=_alias("logstream_buffer_bytes")
    )
    # Deploy targets, configured on the server only
    kubernetes_clusters: dict[str, KubernetesCluster] = Field(
        default_factory=dict, validation_alias=_alias("kubernetes_clusters")
    )
    docker_targets: dict[str, DockerTarget] = Field(
        default_factory=lambda: {"local": DockerTarget()}, validation_alias=_alias("docker_targets")
    )
    deploy_timeout: float = Field(120.0, gt=0, validation_alias=_alias("deploy_timeout"))
    # Builder workers: builds run at once per process; a version whose heartbeat is older than
    # builder_lost_after seconds has lost its worker; the reaper looks every builder_reap_every seconds.
    builder_concurrency: int = Field(4, ge=1, validation_alias=_alias("builder_concurrency"))
    builder_lost_after: float = Field(20.0, gt=0, validation_alias=_alias("builder_lost_after"))
    builder_reap_every: float = Field(5.0, gt=0, validation_alias=_alias("builder_reap_every"))
    # Hostile config files and build output (builder): fornax.yml over config_max_bytes, or expanding
    # to more than config_max_nodes values (aliases counted each time), or parsing longer than
    # config_parse_timeout seconds fails the version; a version whose processing killed its worker
    # builder_max_crashes times fails instead of being resumed again. Log lines are cut after
    # log_max_line bytes, and a version's output after log_max_bytes (its step keeps running).
    config_max_bytes: int = Field(256 * 1024, ge=1024, validation_alias=_alias("config_max_bytes"))
    config_max_nodes: int = Field(10_000, ge=100, validation_alias=_alias("config_max_nodes"))
    config_parse_timeout: float = Field(5.0, gt=0, validation_alias=_alias("config_parse_timeout"))
    builder_max_crashes: int = Field(2, ge=1, validation_alias=_alias("builder_max_crashes"))
    log_max_line: int = Field(16 * 1024, ge=256, validation_alias=_alias("log_max_line"))
    log_max_bytes: int = Field(50 * 1024 * 1024, ge=64 * 1024, validation_alias=_alias("log_max_bytes"))

    # Commit status (services/notifier): the dashboard's address for target_url, per-post timeout, the
    # longest wait between retries of a failed post.
    public_url: str = Field("http://127.0.0.1:7099", validation_alias=_alias("public_url"))
    # Where browsers reach the logstream (ws://… or wss://…); unset: port 8000 of the dashboard's host.
    logstream_public_url: str | None = Field(None, validation_alias=_alias("logstream_public_url"))
    commit_status_timeout: float = Field(10.0, gt=0, validation_alias=_alias("commit_status_timeout"))
    commit_status_max_backoff: float = Field(300.0, gt=0, validation_alias=_alias("commit_status_max_backoff"))

    # -- Fencing and delivery guarantees (sec-fence) --
    # The projector re-publishes a push's planned VersionRequested that was not published for
    # trigger_resend_after seconds (broker down, crash in between); it looks every trigger_resend_every s.
    trigger_resend_after: float = Field(30.0, gt=0, validation_alias=_alias("trigger_resend_after"))
    trigger_resend_every: float = Field(15.0, gt=0, validation_alias=_alias("trigger_resend_every"))
    # The builder keeps re-publishing a version's event for this long while the broker does not
    # acknowledge (a broker restart) before it fails the version with BusUnavailable.
    publish_retry_for: float = Field(60.0, ge=0, validation_alias=_alias("publish_retry_for"))

    @field_validator("mongo_url", mode="before")
    @classmethod
    def _mongo_ip(cls, v: Any) -> Any:
        # The original MONGO_DB_IP was a bare host[:port].
        if isinstance(v, str) and v and "://" not in v:
            return f"mongodb://{v if ':' in v else v + ':27017'}"
        return v

    @field_validator("kafka_bootstrap", mode="before")
    @classmethod
    def _kafka_ip(cls, v: Any) -> Any:
        if isinstance(v, str) and v and ":" not in v:
            return f"{v}:9092"
        return v

    @field_validator("docker_hosts", mode="before")
    @classmethod
    def _hosts(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                return json.loads(v)
            return [h.strip() for h in v.split(",") if h.strip()]
        return v

    @property
    def workspaces(self) -> Path:
        return (self.workspace_root or self.data_dir / "workspaces").resolve()

    def topic(self, name: str) -> str:
        """Full topic name for a short name such as 'versions'."""
        return f"{self.topic_prefix}.{name}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))

    # -- Read-your-writes (creates answer once the read model shows them; log subscriptions wait) --
    # Seconds a create (service, version, deploy, rollback) waits for its projection before answering
    # 202 + Retry-After instead of 201 (0: never wait).
    read_your_writes_wait: float = Field(2.0, ge=0, le=30, validation_alias=_alias("read_your_writes_wait"))
    # Seconds a log subscription to a version not (yet) in the read model waits before 4404 / 1404.
    logstream_version_wait: float = Field(2.0, ge=0, le=30, validation_alias=_alias("logstream_version_wait"))

    # -- Small security holes: event size, secrets at rest ----------------------------------------
    # The largest event a producer sends (bytes); larger ones are refused up front (the gateway answers
    # 413) instead of being rejected by the broker (Kafka's default message.max.bytes is 1 MiB).
    max_event_bytes: int = Field(512 * 1024, ge=16 * 1024, validation_alias=_alias("max_event_bytes"))
    # Fernet key(s), comma-separated (the first one encrypts), for the secrets stored in Mongo (repository
    # passwords and tokens, webhook secrets, build secrets); unset: they are stored in plaintext.
    secrets_key: SecretStr | None = Field(None, validation_alias=_alias("secrets_key"))

    @field_validator("secrets_key", mode="before")
    @classmethod
    def _secrets_key(cls, v: Any) -> Any:
        if isinstance(v, str):
            if not v.strip():
                return None
            from cryptography.fernet import Fernet

            for key in filter(None, (k.strip() for k in v.split(","))):
                Fernet(key)  # ValueError (a loud start) for a key that is not 32 base64 bytes
        return v

    # -- Builder isolation: images a build may use, and what its containers may reach and spend --
    # Image prefixes every user's builds may use (step/service images, any image a Dockerfile reads),
    # besides the user's own `<registry>/<user>/` namespace. Comma-separated or a JSON list.
    builder_allowed_images: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["fornax/", "fornax-base/"], validation_alias=_alias("builder_allowed_images")
    )
    # Processes per step and service container; CPUs (a CFS quota) per such container and per docker build.
    builder_pids_limit: int = Field(256, ge=8, validation_alias=_alias("builder_pids_limit"))
    builder_cpus: float = Field(1.0, gt=0, validation_alias=_alias("builder_cpus"))

    @field_validator("builder_allowed_images", mode="before")
    @classmethod
    def _allowed_images(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                return json.loads(v)
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    # -- Repository URL policy (services/builder/vcs/, shared/repo_url.py) --------------------------
    # Schemes a service's repository URL may use; local repositories (file:// URLs and paths) only
    # when repo_allow_local is on (the local stack turns it on for its demo and tests).
    repo_url_schemes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["https", "ssh", "git", "svn", "svn+ssh"],
        validation_alias=_alias("repo_url_schemes"),
    )
    repo_allow_local: bool = Field(False, validation_alias=_alias("repo_allow_local"))

    @field_validator("repo_url_schemes", mode="before")
    @classmethod
    def _schemes(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = json.loads(v) if v.strip().startswith("[") else v.split(",")
        if isinstance(v, list):
            v = [str(s).strip().lower() for s in v if str(s).strip()]
            bad = [s for s in v if s in ("file", "ext", "fd") or not s.replace("+", "").replace("-", "").isalnum()]
            if bad:
                raise ValueError(f"repo_url_schemes: {bad[0]!r} is not a remote URL scheme (ext:: and "
                                 "fd:: run commands; local repositories are enabled by repo_allow_local)")
        return v

    # -- The seed's surface: Jenkins delegation, OAuth apps for private repositories (see docs/config.md,
    # docs/oauth.md) --
    # Jenkins servers an `integration.jenkins.server` may name (base URLs; empty: Jenkins delegation off).
    jenkins_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_alias("jenkins_servers"))
    jenkins_poll_seconds: float = Field(2.0, gt=0, le=60, validation_alias=_alias("jenkins_poll_seconds"))
    jenkins_request_timeout: float = Field(10.0, gt=0, validation_alias=_alias("jenkins_request_timeout"))
    # Seconds of failed connections after which Jenkins counts as down and the stage fails.
    jenkins_unreachable_after: float = Field(30.0, ge=0, validation_alias=_alias("jenkins_unreachable_after"))
    jenkins_max_log_bytes: int = Field(10 * 1024 * 1024, ge=1024, validation_alias=_alias("jenkins_max_log_bytes"))

    # OAuth apps by provider ("github", "gitlab"); users' tokens are stored encrypted under secrets_key
    # (required for OAuth); the gateway's public base URL (the callback is
    # <base>/services/<provider>/authcallback); seconds an authorization `state` stays valid (single use).
    oauth_providers: dict[str, OAuthApp] = Field(default_factory=dict, validation_alias=_alias("oauth_providers"))
    oauth_callback_base: str = Field("http://127.0.0.1:7099", validation_alias=_alias("oauth_callback_base"))
    oauth_state_seconds: float = Field(600.0, gt=0, le=3600, validation_alias=_alias("oauth_state_seconds"))

    @field_validator("jenkins_servers", mode="before")
    @classmethod
    def _jenkins_servers(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            return json.loads(v) if v.startswith("[") else [s.strip() for s in v.split(",") if s.strip()]
        return v


TOPICS = ("webhooks", "services", "versions", "deploys", "logs")


def target_names(settings: Settings) -> set[str]:
    """The configured deploy targets (Kubernetes clusters and Docker hosts): the gateway accepts deploys to
    these names only, and the deployer builds one adapter for each."""
    return set(settings.kubernetes_clusters) | set(settings.docker_targets)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
