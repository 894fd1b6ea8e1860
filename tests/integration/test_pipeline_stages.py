"""Container stages on the real Docker engine: services by name, steps, outputs, failures, timeouts,
cancel, isolation between versions, resource limits, and no leaked containers or networks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import docker
import pytest
from aiokafka import AIOKafkaConsumer

from services.builder.pipeline import StageFailed, cleanup_version, network_name, parse_config, run_stage
from shared.bus import EventBus
from shared.logwriter import LogWriter
from tests.integration.pipeline_helpers import MemoryLog, Versions, labelled

pytestmark = pytest.mark.integration

SERVICE_LOOP = "while true; do echo {answer} | nc -l -p 27017; done"
# Retry: the service's listener may need a moment after its container started.
REACH = ("for i in $(seq 1 50); do if echo ping | nc -w 2 {host} 27017 > reply; then break; fi; sleep 0.2; "
         "done; cat reply")


@pytest.fixture(scope="module")
def client():
    c = docker.from_env()
    yield c
    c.close()


@pytest.fixture
def versions(client, tmp_path: Path, settings, busybox_image):
    v = Versions(client, tmp_path, settings)
    yield v
    assert v.leaks() == []


def seed_config(image: str, answer: str = "pong") -> str:
    return f"""
integration:
  image: {image}
  environment: [MONGO=mongo]
  commands:
    - echo "network $FORNAX_NETWORK workspace $FORNAX_WORKSPACE in $(pwd)"
    - {json.dumps(REACH.format(host="$MONGO"))}
    - grep {answer} reply
  services:
    mongo:
      image: {image}
      commands: [{json.dumps(SERVICE_LOOP.format(answer=answer))}]
pre_build:
  image: {image}
  environment:
    STEP_NAME: prebuild-step
  commands:
    - echo "$STEP_NAME" > /root/newfile
  outputs: [/root/newfile]
"""


async def read_log_lines(settings, version_id: str, want: int) -> list[dict]:
    consumer = AIOKafkaConsumer(settings.topic("logs"), bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    lines: list[dict] = []
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while len(lines) < want and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    event = json.loads(r.value)
                    if event["payload"]["version_id"] == version_id:
                        lines.append(event["payload"])
    finally:
        await consumer.stop()
    return sorted(lines, key=lambda p: p["seq"])


async def test_seed_scenario_service_by_name_pre_build_output_and_docker_build(
        versions, client, settings, busybox_image):
    config = parse_config(seed_config(busybox_image))
    bus = EventBus(settings)
    await bus.start()
    vid = versions.new_id()
    log = LogWriter(bus, vid)
    log.start()
    ctx = versions.context(log, version_id=vid)
    (ctx.workspace / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY newfile /newfile\n")
    tag = f"fornax-test/pipeline-{vid}:latest"
    try:
        await run_stage(ctx, config, "integration")
        # the integration network stays for later stages; its service containers are gone
        containers, networks = labelled(client, vid)
        assert containers == [] and [n.name for n in networks] == [network_name(vid)]
        await run_stage(ctx, config, "pre_build")
        assert (ctx.workspace / "newfile").read_text() == "prebuild-step\n"
        dockerfile, context = config.dockerfile(ctx.workspace)
        await asyncio.to_thread(client.images.build, path=str(context), dockerfile=str(dockerfile), tag=tag,
                                rm=True, forcerm=True)
        out = await asyncio.to_thread(client.containers.run, tag, ["cat", "/newfile"], remove=True)
        assert out == b"prebuild-step\n"
    finally:
        await log.close()
        await bus.stop()
        cleanup_version(client, vid)
        try:
            client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass
    lines = await read_log_lines(settings, vid, want=6)
    texts = [(p["stage"], p["text"]) for p in lines]
    assert ("integration", f"network {network_name(vid)} workspace /workspace in /workspace") in texts
    assert ("integration", "$ grep pong reply") in texts
    assert ("integration", "pong") in texts
    assert ("pre_build", '$ echo "$STEP_NAME" > /root/newfile') in texts
    assert [p["seq"] for p in lines] == list(range(1, len(lines) + 1))
    # each command is echoed before its own output
    assert texts.index(("integration", "$ grep pong reply")) < len(texts) - 1


async def test_failing_command_fails_the_step_with_exit_code_and_last_lines(versions, busybox_image):
    config = parse_config(f"""
integration:
  image: {busybox_image}
  commands:
    - echo first
    - echo about to fail; exit 3
    - echo never
""")
    ctx = versions.context()
    with pytest.raises(StageFailed) as info:
        await run_stage(ctx, config, "integration")
    assert info.value.exit_code == 3 and info.value.kind == "failed"
    assert "command `echo about to fail; exit 3` exited with code 3" in info.value.message
    assert "about to fail" in info.value.message.split("last lines:")[1]
    assert "never" not in ctx.log.texts() and "$ echo never" not in ctx.log.texts()
    assert ctx.log.texts()[:3] == ["$ echo first", "first", "$ echo about to fail; exit 3"]


async def test_output_without_trailing_newline_and_live_order(versions, busybox_image):
    config = parse_config(f"""
post_build:
  image: {busybox_image}
  commands: ["printf no-newline", "echo next >&2", "echo last"]
""")
    ctx = versions.context()
    await run_stage(ctx, config, "post_build")
    assert ctx.log.texts() == ["$ printf no-newline", "no-newline", "$ echo next >&2", "next", "$ echo last",
                               "last"]


async def test_output_is_streamed_while_the_step_runs(versions, busybox_image):
    """A line reaches the log while the command that printed it still runs (not after the step)."""
    config = parse_config(f"""
post_build:
  image: {busybox_image}
  commands: ["echo early; while [ ! -f /workspace/go-on ]; do sleep 0.1; done; echo late"]
""")
    ctx = versions.context()
    stage = asyncio.create_task(run_stage(ctx, config, "post_build"))
    for _ in range(600):
        if "early" in ctx.log.texts() or stage.done():
            break
        await asyncio.sleep(0.1)
    assert "early" in ctx.log.texts() and not stage.done()
    (ctx.workspace / "go-on").touch()  # only now may the command finish
    await stage
    assert ctx.log.texts()[-2:] == ["early", "late"]


async def test_sh_e_semantics_stop_at_a_failing_pipeline_element(versions, busybox_image):
    config = parse_config(f"""
post_build:
  image: {busybox_image}
  commands:
    - |
      echo line one
      false
      echo unreachable
""")
    ctx = versions.context()
    with pytest.raises(StageFailed, match="exited with code 1"):
        await run_stage(ctx, config, "post_build")
    assert "unreachable" not in ctx.log.texts()


async def test_environment_workspace_and_resource_limits(versions, busybox_image):
    config = parse_config(f"""
integration:
  image: {busybox_image}
  environment: {{GREETING: hello, NUM: 7}}
  commands:
    - echo "$GREETING $NUM $STEP_NAME $FORNAX_WORKSPACE $(pwd)"
    - cat from-repo.txt
    - echo made-in-step > made.txt
    - cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.shares
resources: {{memory: 200, cpu: 300}}
""")
    ctx = versions.context()
    (ctx.workspace / "from-repo.txt").write_text("repository file\n")
    await run_stage(ctx, config, "integration")
    texts = ctx.log.texts()
    assert "hello 7 integration /workspace /workspace" in texts
    assert "repository file" in texts
    assert (ctx.workspace / "made.txt").read_text() == "made-in-step\n"
    assert str(200 * 1024 * 1024) in texts and "300" in texts


async def test_outputs_relative_paths_stay_and_missing_outputs_fail(versions, busybox_image):
    config = parse_config(f"""
pre_build:
  image: {busybox_image}
  commands: ["mkdir -p dist /root/bundle && echo app > dist/app && echo a > /root/bundle/a"]
  outputs: [dist/app, /root/bundle]
""")
    ctx = versions.context()
    await run_stage(ctx, config, "pre_build")
    assert (ctx.workspace / "dist" / "app").read_text() == "app\n"
    assert (ctx.workspace / "bundle" / "a").read_text() == "a\n"
    missing = parse_config(f"""
pre_build:
  image: {busybox_image}
  commands: ["true"]
  outputs: [/root/nothing]
""")
    with pytest.raises(StageFailed, match="output /root/nothing was not found"):
        await run_stage(versions.context(), missing, "pre_build")


async def test_an_output_linking_out_of_the_workspace_is_refused(versions, busybox_image):
    config = parse_config(f"""
pre_build:
  image: {busybox_image}
  commands: ["ln -s /etc/passwd /root/evil"]
  outputs: [/root/evil]
""")
    ctx = versions.context()
    with pytest.raises(StageFailed, match="output /root/evil could not be copied"):
        await run_stage(ctx, config, "pre_build")
    assert not (ctx.workspace / "evil").exists() and not (ctx.workspace / "evil").is_symlink()


async def test_stage_timeout_stops_and_removes_everything(versions, client, busybox_image):
    config = parse_config(f"""
integration:
  image: {busybox_image}
  timeout: 2
  commands: ["echo started", "sleep 60"]
  services:
    db:
      image: {busybox_image}
      commands: ["sleep 600"]
""")
    ctx = versions.context()
    with pytest.raises(StageFailed, match="timed out") as info:
        await run_stage(ctx, config, "integration")
    assert info.value.kind == "timed_out"
    # (the timeout may hit while containers are still being created: none may survive it either)
    for _ in range(50):
        if not labelled(client, ctx.version_id)[0]:
            break
        await asyncio.sleep(0.2)
    assert labelled(client, ctx.version_id)[0] == []


async def test_version_deadline_caps_the_stage(versions, busybox_image):
    import time

    config = parse_config(f"post_build:\n  image: {busybox_image}\n  commands: [sleep 60]\n")
    ctx = versions.context(deadline=time.monotonic() + 1.5)
    with pytest.raises(StageFailed, match="timed out"):
        await run_stage(ctx, config, "post_build")


async def test_cancel_stops_containers(versions, client, busybox_image):
    config = parse_config(f"""
integration:
  image: {busybox_image}
  commands: ["echo waiting", "sleep 60"]
  services:
    db:
      image: {busybox_image}
      commands: ["sleep 600"]
""")
    ctx = versions.context()

    async def cancel_when_running() -> None:
        for _ in range(300):
            if "$ sleep 60" in ctx.log.texts():
                break
            await asyncio.sleep(0.1)
        ctx.cancelled.set()

    canceller = asyncio.create_task(cancel_when_running())
    with pytest.raises(StageFailed) as info:
        await run_stage(ctx, config, "integration")
    await canceller
    assert info.value.kind == "cancelled" and str(info.value) == "cancelled"
    assert labelled(client, ctx.version_id)[0] == []


async def test_two_versions_are_isolated(versions, client, busybox_image):
    """Each version's CI reaches its own `mongo`; the other version's service is unreachable, by
    container name and by IP (different networks)."""
    a, b = versions.context(), versions.context()
    config_a = parse_config(seed_config(busybox_image, answer="answer-a"))
    config_b = parse_config(seed_config(busybox_image, answer="answer-b"))
    await asyncio.gather(run_stage(a, config_a, "integration"), run_stage(b, config_b, "integration"))
    assert "answer-a" in a.log.texts() and "answer-b" not in a.log.texts()
    assert "answer-b" in b.log.texts() and "answer-a" not in b.log.texts()

    # Now keep b's service running and probe it from a's network.
    hold = parse_config(f"""
integration:
  image: {busybox_image}
  commands: ["{REACH.format(host='mongo')}", "sleep 30"]
  services:
    mongo:
      image: {busybox_image}
      commands: [{json.dumps(SERVICE_LOOP.format(answer="answer-b"))}]
""")
    holder = asyncio.create_task(run_stage(b, hold, "integration"))
    try:
        svc_name = f"fornax-{b.version_id}-svc-mongo"
        ip = None
        for _ in range(300):
            try:
                svc = client.containers.get(svc_name)
                ip = svc.attrs["NetworkSettings"]["Networks"][network_name(b.version_id)]["IPAddress"] or None
                if ip and "answer-b" in b.log.texts():
                    break
            except docker.errors.NotFound:
                pass
            await asyncio.sleep(0.1)
        assert ip, "b's service did not start"
        probe = parse_config(f"""
integration:
  image: {busybox_image}
  commands:
    - if echo x | nc -w 2 {svc_name} 27017; then echo REACHED-BY-NAME; else echo unreachable-by-name; fi
    - if echo x | nc -w 2 {ip} 27017; then echo REACHED-BY-IP; else echo unreachable-by-ip; fi
""")
        await run_stage(a, probe, "integration")
        assert "unreachable-by-name" in a.log.texts() and "unreachable-by-ip" in a.log.texts()
        assert "REACHED-BY-NAME" not in a.log.texts() and "REACHED-BY-IP" not in a.log.texts()
    finally:
        b.cancelled.set()
        with pytest.raises(StageFailed):
            await holder


async def test_service_logs_are_prefixed_and_missing_image_fails(versions, busybox_image):
    config = parse_config(f"""
integration:
  image: {busybox_image}
  commands: ["sleep 1"]
  services:
    talker:
      image: {busybox_image}
      commands: ["echo hello from service", "sleep 60"]
""")
    ctx = versions.context()
    await run_stage(ctx, config, "integration")
    assert "[talker] hello from service" in ctx.log.texts()
    bad = parse_config("integration:\n  image: fornax-test/does-not-exist:nope\n  commands: [true]\n")
    with pytest.raises(StageFailed, match="not available on the build host"):
        await run_stage(versions.context(), bad, "integration")


async def test_cleanup_version_is_idempotent(versions, client, busybox_image):
    ctx = versions.context()
    config = parse_config(f"integration:\n  image: {busybox_image}\n  commands: [true]\n")
    await run_stage(ctx, config, "integration")
    assert labelled(client, ctx.version_id)[1]  # the network is still there
    cleanup_version(client, ctx.version_id)
    cleanup_version(client, ctx.version_id)
    assert labelled(client, ctx.version_id) == ([], [])
    cleanup_version(client, "never-existed")


async def test_other_stages_are_refused_and_undefined_steps_are_no_ops(versions, busybox_image):
    config = parse_config("build: {dockerfile_path: Dockerfile}\n")
    ctx = versions.context()
    await run_stage(ctx, config, "integration")  # not configured: nothing happens
    with pytest.raises(ValueError):
        await run_stage(ctx, config, "build")
    assert ctx.log.texts() == []


def test_memory_log_matches_logwriter_signature() -> None:
    import inspect

    assert list(inspect.signature(LogWriter.write).parameters) == list(
        inspect.signature(MemoryLog.write).parameters)
