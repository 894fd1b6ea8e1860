"""The stage runner on the fake container backend: the steps' order and log, failures naming the
command, services, timeouts, cancel, cleanup whatever happens, output caps, image and path checks, and
what every container is given (network, limits, labels)."""

from __future__ import annotations

import asyncio
import inspect
import io
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from services.builder.pipeline import (
    ContainerBackend,
    ContainerSpec,
    DockerBackend,
    StageContext,
    StageFailed,
    network_name,
    parse_config,
    run_stage,
)
from services.builder.pipeline.containers import TAIL_CHARS
from services.builder.pipeline.docker_backend import create_kwargs
from shared.settings import Settings
from tests.fakes.backend import KILLED, TERMINATED, FakeBackend

REG = "reg.test:5000"
IMAGE = "fornax/busybox"


@dataclass
class MemoryLog:
    lines: list[tuple[str, str, str]] = field(default_factory=list)  # (stage, stream, text)

    async def write(self, stage: str, text: str, stream: str = "stdout") -> None:
        for line in text.splitlines() or [""]:
            self.lines.append((stage, stream, line))

    def texts(self, stage: str | None = None, stream: str | None = None) -> list[str]:
        return [t for s, st, t in self.lines if (stage is None or s == stage) and (stream is None or st == stream)]


def settings(**extra: Any) -> Settings:
    base: dict[str, Any] = dict(registry_location=REG, builder_allowed_images=["fornax/"], builder_pids_limit=64,
                                builder_cpus=0.5, memory_for_container=96, cpu_for_container=200)
    return Settings(**{**base, **extra})


def context(backend: FakeBackend, tmp_path: Path, **kw: Any) -> StageContext:
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    return StageContext(backend=backend, version_id="v1", user_id="alice", workspace=workspace,
                        log=MemoryLog(), settings=kw.pop("settings", None) or settings(), **kw)


def config(stage_yaml: str):
    return parse_config(stage_yaml)


def step(commands: list[str], stage: str = "integration", extra: str = "") -> str:
    listed = "".join(f"\n    - {c!r}" for c in commands)
    return f"{stage}:\n  image: {IMAGE}\n  commands:{listed}\n{extra}"


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


def test_both_backends_implement_every_operation_of_the_port() -> None:
    wanted = {n: f for n, f in vars(ContainerBackend).items() if not n.startswith("_") and callable(f)}
    assert set(wanted) == {"ensure_network", "ensure_image", "create", "start", "output", "wait", "oom_killed",
                           "copy_from", "remove", "cleanup"}
    for impl in (DockerBackend, FakeBackend):
        for name in wanted:
            method = getattr(impl, name)
            is_async = inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)
            assert is_async, f"{impl.__name__}.{name}"
            assert list(inspect.signature(method).parameters) == list(inspect.signature(wanted[name]).parameters)


async def test_commands_run_in_order_with_their_output(backend: FakeBackend, tmp_path: Path) -> None:
    ctx = context(backend, tmp_path, epoch=7)
    await run_stage(ctx, config(step(["echo one", "echo -n partial", "echo two"])), "integration")
    assert ctx.log.texts("integration") == ["$ echo one", "one", "$ echo -n partial", "partial", "$ echo two", "two"]
    name = "fornax-v1-integration"
    assert backend.events == [("network", network_name("v1")), ("create", name), ("start", name), ("remove", name)]
    assert backend.containers == {}


async def test_every_container_gets_the_network_limits_labels_and_workspace(backend: FakeBackend,
                                                                            tmp_path: Path) -> None:
    ctx = context(backend, tmp_path, epoch=7)
    cfg = config(step(["printenv FORNAX_NETWORK"], extra="  environment: [MINE=1]\n  services:\n"
                                                         f"    db:\n      image: {IMAGE}\n"))
    await run_stage(ctx, cfg, "integration")
    svc, main = backend.all
    for c in (svc, main):
        s = c.spec
        limits = (s.network, s.memory_mb, s.cpu_shares, s.pids_limit, s.nano_cpus)
        assert limits == ("fornax-v1", 96, 200, 64, 500_000_000)
        assert s.labels == {"fornax.version": "v1", "fornax.stage": "integration", "fornax.user": "alice",
                            "fornax.epoch": "7", "fornax.role": c.spec.labels["fornax.role"]}
        assert s.environment["FORNAX_VERSION"] == "v1" and s.environment["CI"] == "true"
    assert (svc.spec.labels["fornax.role"], svc.spec.alias, svc.spec.binds) == ("service", "db", [])
    assert main.spec.labels["fornax.role"] == "step" and main.spec.working_dir == "/workspace"
    assert main.spec.binds == [f"{ctx.workspace.resolve()}:/workspace:rw"]
    assert main.spec.environment["MINE"] == "1"
    assert "fornax-v1" in ctx.log.texts()


async def test_a_failing_command_stops_the_step_and_names_the_command(backend: FakeBackend, tmp_path: Path) -> None:
    ctx = context(backend, tmp_path)
    with pytest.raises(StageFailed) as err:
        await run_stage(ctx, config(step(["echo before", "exit 3", "echo never"])), "integration")
    assert err.value.message == "integration: command `exit 3` exited with code 3; last lines:\nbefore"
    assert (err.value.kind, err.value.exit_code) == ("failed", 3)
    assert "never" not in ctx.log.texts() and backend.containers == {}


async def test_an_unknown_command_and_an_oom_kill_are_told_apart(backend: FakeBackend, tmp_path: Path) -> None:
    with pytest.raises(StageFailed, match=r"command `nosuch` exited with code 127; last lines:\n.*not found"):
        await run_stage(context(backend, tmp_path), config(step(["nosuch"])), "integration")
    with pytest.raises(StageFailed) as err:
        await run_stage(context(backend, tmp_path), config(step(["oom"], "post_build")), "post_build")
    assert err.value.message == "post_build: command `oom` was killed: out of memory (limit 96 MiB)"
    assert err.value.exit_code == KILLED


async def test_services_start_first_log_with_their_name_and_are_removed(backend: FakeBackend,
                                                                        tmp_path: Path) -> None:
    ctx = context(backend, tmp_path)
    services = (f"  services:\n    db:\n      image: {IMAGE}\n      commands: ['echo ready', hang]\n"
                f"    cache:\n      image: {IMAGE}\n")
    await run_stage(ctx, config(step(["sleep 0.05", "echo tested"], extra=services)), "integration")
    assert backend.names("start") == ["fornax-v1-svc-db", "fornax-v1-svc-cache", "fornax-v1-integration"]
    assert set(backend.names("remove")) == {"fornax-v1-svc-db", "fornax-v1-svc-cache", "fornax-v1-integration"}
    texts = ctx.log.texts()
    assert "starting service db (fornax/busybox)" in texts and "[db] ready" in texts and "tested" in texts
    assert backend.containers == {}


async def test_a_stage_timeout_stops_gracefully_and_removes_everything(backend: FakeBackend,
                                                                       tmp_path: Path) -> None:
    ctx = context(backend, tmp_path)
    services = f"  services:\n    db:\n      image: {IMAGE}\n"
    started = time.monotonic()
    with pytest.raises(StageFailed) as err:
        await run_stage(ctx, config(step(["echo working", "hang"], extra=services + "  timeout: 0.3\n")),
                        "integration")
    assert time.monotonic() - started < 5
    assert err.value.kind == "timed_out" and err.value.message.startswith("integration timed out after ")
    assert any(t.startswith("timed out after") for t in ctx.log.texts(stream="system"))
    assert set(backend.names("stop")) == {"fornax-v1-svc-db", "fornax-v1-integration"}
    assert {c.exit_code for c in backend.all} == {TERMINATED} and backend.containers == {}


async def test_the_version_deadline_caps_the_stage(backend: FakeBackend, tmp_path: Path) -> None:
    with pytest.raises(StageFailed, match="the version ran out of time") as err:
        await run_stage(context(backend, tmp_path, deadline=time.monotonic() - 1), config(step(["true"])),
                        "integration")
    assert err.value.kind == "timed_out" and backend.events == []
    with pytest.raises(StageFailed, match="timed out after") as err:
        await run_stage(context(backend, tmp_path, deadline=time.monotonic() + 0.3), config(step(["hang"])),
                        "integration")
    assert err.value.kind == "timed_out" and backend.containers == {}


async def test_cancel_stops_the_running_step(backend: FakeBackend, tmp_path: Path) -> None:
    ctx = context(backend, tmp_path)
    stage = asyncio.create_task(run_stage(ctx, config(step(["echo started", "hang"])), "integration"))
    while "started" not in ctx.log.texts():
        await asyncio.sleep(0.01)
    ctx.cancelled.set()
    with pytest.raises(StageFailed) as err:
        await stage
    assert (err.value.message, err.value.kind) == ("cancelled", "cancelled")
    assert "cancelled: stopping containers" in ctx.log.texts(stream="system")
    assert backend.names("stop") == ["fornax-v1-integration"] and backend.containers == {}


async def test_cancelled_before_the_stage_starts_nothing(backend: FakeBackend, tmp_path: Path) -> None:
    ctx = context(backend, tmp_path)
    ctx.cancelled.set()
    with pytest.raises(StageFailed, match="cancelled"):
        await run_stage(ctx, config(step(["echo x"])), "integration")
    assert backend.events == []


async def test_a_container_still_being_created_at_cancel_removes_itself(tmp_path: Path) -> None:
    backend = FakeBackend(create_delay=0.3)
    ctx = context(backend, tmp_path)
    stage = asyncio.create_task(run_stage(ctx, config(step(["hang"])), "integration"))
    await asyncio.sleep(0.1)
    ctx.cancelled.set()
    with pytest.raises(StageFailed, match="cancelled"):
        await stage
    assert backend.names("create") == ["fornax-v1-integration"]
    assert backend.names("remove") == ["fornax-v1-integration"] and backend.names("start") == []
    assert backend.containers == {}


async def test_cleanup_runs_when_a_later_container_cannot_start(backend: FakeBackend, tmp_path: Path) -> None:
    ctx = context(backend, tmp_path)
    extra = f"  environment: [FAKE_START_ERROR=no room]\n  services:\n    db:\n      image: {IMAGE}\n"
    with pytest.raises(StageFailed) as err:
        await run_stage(ctx, config(step(["true"], extra=extra)), "integration")
    assert err.value.message == "integration: could not start step container: no room"
    assert sorted(backend.names("remove")) == ["fornax-v1-integration", "fornax-v1-svc-db"]
    assert backend.containers == {}


async def test_an_engine_refusal_is_a_stage_error(tmp_path: Path) -> None:
    backend = FakeBackend(refuse_network="network pool exhausted")
    with pytest.raises(StageFailed) as err:
        await run_stage(context(backend, tmp_path), config(step(["true"])), "integration")
    assert err.value.message == "integration: docker error: network pool exhausted"


async def test_long_lines_are_cut_and_the_error_quotes_only_their_start(backend: FakeBackend,
                                                                        tmp_path: Path) -> None:
    ctx = context(backend, tmp_path, settings=settings(log_max_line=256))
    with pytest.raises(StageFailed) as err:
        await run_stage(ctx, config(step(["spew 5000 a", "exit 1"])), "integration")
    long_line = next(t for t in ctx.log.texts() if t.startswith("aaa"))
    assert long_line == "a" * (256 + 1024) + f"…[{5000 - 256 - 1024} bytes truncated]"
    quoted = err.value.message.split("last lines:\n", 1)[1]
    assert quoted == "a" * TAIL_CHARS + "…"


async def test_images_are_checked_and_only_the_users_own_are_pulled(tmp_path: Path) -> None:
    own = f"{REG}/alice/tools:1"
    backend = FakeBackend(images={IMAGE}, registry={own})
    with pytest.raises(StageFailed, match=r"integration: step: image other/img is not allowed"):
        await run_stage(context(backend, tmp_path), config(step(["true"]).replace(IMAGE, "other/img")),
                        "integration")
    with pytest.raises(StageFailed, match=r"image fornax/absent is not available on the build host"):
        await run_stage(context(backend, tmp_path), config(step(["true"]).replace(IMAGE, "fornax/absent")),
                        "integration")
    assert backend.names("create") == []
    await run_stage(context(backend, tmp_path), config(step(["true"]).replace(IMAGE, own)), "integration")
    assert [(image, auth["serveraddress"]) for image, auth in backend.pulls if auth] == [(own, REG)]


async def test_pre_build_outputs_are_copied_into_the_workspace(backend: FakeBackend, tmp_path: Path) -> None:
    ctx = context(backend, tmp_path)
    extra = "  outputs: [/root/gen/out.txt, build/made.txt]\n"
    await run_stage(ctx, config(step(["write /root/gen/out.txt hello", "write build/made.txt here"],
                                     "pre_build", extra)), "pre_build")
    assert (ctx.workspace / "out.txt").read_text() == "hello\n"
    assert (ctx.workspace / "build" / "made.txt").read_text() == "here\n"
    assert "copied output /root/gen/out.txt → out.txt" in ctx.log.texts(stream="system")

    with pytest.raises(StageFailed, match="pre_build: output /root/nope was not found in the container"):
        await run_stage(context(backend, tmp_path), config(step(["true"], "pre_build", "  outputs: [/root/nope]\n")),
                        "pre_build")
    with pytest.raises(StageFailed, match="pre_build: output missing.txt was not produced"):
        await run_stage(context(backend, tmp_path), config(step(["true"], "pre_build", "  outputs: [missing.txt]\n")),
                        "pre_build")
    assert backend.containers == {}


async def test_an_output_archive_escaping_the_workspace_is_refused(backend: FakeBackend, tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    backend.archives["/root/evil"] = raw.getvalue()
    ctx = context(backend, tmp_path)
    with pytest.raises(StageFailed, match="pre_build: output /root/evil could not be copied"):
        await run_stage(ctx, config(step(["true"], "pre_build", "  outputs: [/root/evil]\n")), "pre_build")
    assert not (tmp_path / "escaped.txt").exists()


async def test_a_volume_outside_the_workspace_is_refused_before_anything_runs(backend: FakeBackend,
                                                                              tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "out").symlink_to(tmp_path)
    with pytest.raises(StageFailed, match=r"integration: volumes\[0\]: out escapes the workspace"):
        await run_stage(context(backend, tmp_path), config(step(["true"], extra="  volumes: ['out:/data']\n")),
                        "integration")
    assert backend.names("create") == []


async def test_only_configured_container_stages_run(backend: FakeBackend, tmp_path: Path) -> None:
    ctx = context(backend, tmp_path)
    await run_stage(ctx, config(step(["true"])), "post_build")  # not configured
    assert backend.events == []
    with pytest.raises(ValueError, match="not 'build'"):
        await run_stage(ctx, config(step(["true"])), "build")


async def test_fake_cleanup_removes_by_version_and_epoch(backend: FakeBackend, tmp_path: Path) -> None:
    a = context(backend, tmp_path, epoch=1)
    hold = config(step(["hang"]))
    first = asyncio.create_task(run_stage(a, hold, "integration"))
    while "fornax-v1-integration" not in backend.containers:
        await asyncio.sleep(0.01)
    await backend.cleanup("v1", epoch=2)
    assert "fornax-v1-integration" in backend.containers
    await backend.cleanup("v1")
    assert backend.containers == {} and backend.networks == {}
    with pytest.raises(StageFailed, match=f"exited with code {KILLED}"):
        await first


def test_the_docker_backend_passes_every_limit_of_the_spec_to_the_engine() -> None:
    client = docker.DockerClient(base_url="tcp://127.0.0.1:9", version="1.43")  # never connects
    spec = ContainerSpec(name="fornax-v1-svc-db", image=IMAGE, environment={"CI": "true"},
                         labels={"fornax.version": "v1"}, network="fornax-v1", memory_mb=96, cpu_shares=200,
                         pids_limit=64, nano_cpus=500_000_000, entrypoint=["/bin/sh", "-c"], command=["x"],
                         working_dir="/workspace", binds=["/ws:/workspace:rw"], alias="db")
    kw = create_kwargs(client, spec)
    assert {k: kw[k] for k in ("mem_limit", "memswap_limit", "cpu_shares", "pids_limit", "nano_cpus", "init",
                               "network", "labels", "volumes", "working_dir")} == {
        "mem_limit": "96m", "memswap_limit": "96m", "cpu_shares": 200, "pids_limit": 64,
        "nano_cpus": 500_000_000, "init": True, "network": "fornax-v1", "labels": {"fornax.version": "v1"},
        "volumes": ["/ws:/workspace:rw"], "working_dir": "/workspace"}
    assert kw["networking_config"]["fornax-v1"]["Aliases"] == ["db"]
    bare = create_kwargs(client, ContainerSpec(name="n", image=IMAGE, environment={}, labels={}, network="net",
                                               memory_mb=4, cpu_shares=2, pids_limit=8, nano_cpus=1))
    assert not {"entrypoint", "command", "working_dir", "volumes", "networking_config"} & set(bare)
    client.close()
