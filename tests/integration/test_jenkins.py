"""integration.jenkins: the integration stage run as a Jenkins job (tests/fixtures/jenkins_fake.py
implements the remote API over real HTTP on 127.0.0.1): trigger with the commit and version, follow
the queue item, stream the console into the log, map the result; Jenkins down; cancel and timeout."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest

from services.builder.pipeline import StageContext, StageFailed, parse_config, run_stage
from shared.settings import Settings
from tests.fixtures.jenkins_fake import FakeJenkins
from tests.integration.pipeline_helpers import MemoryLog

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
SECRETS = {"JENKINS_USER": "ci-bot", "JENKINS_TOKEN": "11d2c0ffee-api-token"}


@pytest.fixture(scope="module")
def jenkins():
    fake = FakeJenkins(user="ci-bot", token="11d2c0ffee-api-token").start()
    yield fake
    fake.stop()


def settings_for(*servers: str, **extra) -> Settings:
    return Settings(jenkins_servers=list(servers), jenkins_poll_seconds=0.05, jenkins_request_timeout=2.0,
                    jenkins_unreachable_after=1.0, **extra)


def config(server: str, job: str, extra: str = "") -> object:
    return parse_config(f"""
integration:
  jenkins:
    server: {server}
    job: {job}
    credentials: {{user: JENKINS_USER, token: JENKINS_TOKEN}}
{extra}""", "fornax.yml")


def context(tmp_path: Path, settings: Settings, log: MemoryLog, **kw) -> StageContext:
    return StageContext(backend=None, version_id="jv" + str(time.monotonic_ns()), user_id="u",
                        workspace=tmp_path, log=log, settings=settings, cancelled=asyncio.Event(),
                        commit="3f1c2e9", version_name="v1.2", secrets=dict(SECRETS), **kw)


async def test_success_streams_the_console_and_passes_commit_and_version(jenkins, tmp_path) -> None:
    log = MemoryLog()
    await run_stage(context(tmp_path, settings_for(jenkins.url), log), config(jenkins.url, "team/app-tests"),
                    "integration")
    lines = log.texts("integration")
    assert lines[lines.index("Started by remote API for v1.2"):][:4] == [
        "Started by remote API for v1.2", "Checking out 3f1c2e9", "Running tests", "ok 1 - it works"]
    assert "Finished: SUCCESS" in lines and "Jenkins result: SUCCESS" in lines
    build = jenkins.builds[f"team/app-tests/{max(b.number for b in jenkins.builds.values())}"]
    assert build.params["FORNAX_COMMIT"] == "3f1c2e9" and build.params["FORNAX_VERSION"] == "v1.2"
    assert not any("11d2c0ffee" in line for line in lines)


@pytest.mark.parametrize(("job", "extra", "expected"), [
    ("broken", "", "job 'broken' ended FAILURE"),
    ("flaky", "", "job 'flaky' ended UNSTABLE"),
    ("no-such-job", "", "has no job 'no-such-job'"),
])
async def test_failures_name_jenkins_and_the_result(jenkins, tmp_path, job, extra, expected) -> None:
    log = MemoryLog()
    with pytest.raises(StageFailed) as info:
        await run_stage(context(tmp_path, settings_for(jenkins.url), log), config(jenkins.url, job, extra),
                        "integration")
    assert str(info.value) == f"integration: Jenkins {jenkins.url}: {expected}"
    if job != "no-such-job":
        assert "Running tests" in log.texts("integration")  # the console came before the verdict


async def test_unstable_may_pass(jenkins, tmp_path) -> None:
    cfg = parse_config(f"integration:\n  jenkins:\n    server: {jenkins.url}\n    job: flaky\n"
                       "    unstable_passes: true\n    credentials: {user: JENKINS_USER, token: JENKINS_TOKEN}\n")
    await run_stage(context(tmp_path, settings_for(jenkins.url), MemoryLog()), cfg, "integration")


async def test_jenkins_down_fails_within_bounded_time(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(StageFailed, match=rf"^integration: Jenkins {down}: unreachable \(ConnectError"):
        await run_stage(context(tmp_path, settings_for(down), MemoryLog()), config(down, "app-tests"),
                        "integration")
    assert time.monotonic() - started < 30  # jenkins_unreachable_after=1 (+ one request timeout)


async def test_credentials_and_server_policy(jenkins, tmp_path) -> None:
    with pytest.raises(StageFailed, match="is not one of the Jenkins servers the operator allows"):
        await run_stage(context(tmp_path, settings_for(), MemoryLog()), config(jenkins.url, "app-tests"),
                        "integration")
    ctx = context(tmp_path, settings_for(jenkins.url), MemoryLog())
    ctx.secrets = {"JENKINS_USER": "ci-bot"}
    with pytest.raises(StageFailed, match="jenkins.credentials.token: the service has no secret named "
                                          "'JENKINS_TOKEN'"):
        await run_stage(ctx, config(jenkins.url, "app-tests"), "integration")
    ctx.secrets = {"JENKINS_USER": "ci-bot", "JENKINS_TOKEN": "wrong"}
    with pytest.raises(StageFailed, match=r"refused the credentials \(401\)"):
        await run_stage(ctx, config(jenkins.url, "app-tests"), "integration")


async def test_console_is_capped_and_jenkins_urls_stay_on_the_server(jenkins, tmp_path) -> None:
    log = MemoryLog()
    await run_stage(context(tmp_path, settings_for(jenkins.url, jenkins_max_log_bytes=1024), log),
                    config(jenkins.url, "chatty"), "integration")
    lines = log.texts("integration")
    assert "Jenkins console truncated at 1024 bytes" in lines and "Jenkins result: SUCCESS" in lines
    kept = [line for line in lines if line.startswith(("0", "x"))]
    assert kept[0].startswith("000 ") and len("\n".join(kept).encode()) <= 1024
    with pytest.raises(StageFailed, match=r"pointed outside itself \(http://169\.254\.169\.254/queue/item/"):
        await run_stage(context(tmp_path, settings_for(jenkins.url), MemoryLog()),
                        config(jenkins.url, "elsewhere"), "integration")


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_cancel_or_timeout_stops_the_build(jenkins, tmp_path, how) -> None:
    log = MemoryLog()
    ctx = context(tmp_path, settings_for(jenkins.url), log)
    cfg = config(jenkins.url, "endless", "  timeout: 1\n" if how == "timeout" else "")

    async def cancel_later() -> None:
        while "Running tests" not in log.texts("integration"):
            await asyncio.sleep(0.05)
        ctx.cancelled.set()

    canceller = asyncio.create_task(cancel_later()) if how == "cancel" else None
    with pytest.raises(StageFailed) as info:
        await run_stage(ctx, cfg, "integration")
    if canceller:
        canceller.cancel()
    assert info.value.kind == ("cancelled" if how == "cancel" else "timed_out")
    stopped = [b for b in jenkins.builds.values() if b.job == "endless" and b.params["FORNAX_VERSION"] == "v1.2"]
    assert stopped and stopped[-1].aborted


def test_jenkins_config_errors_name_key_and_line() -> None:
    from services.builder.pipeline import ConfigError

    cases = {
        "integration:\n  jenkins:\n    server: ftp://x\n    job: a\n":
            "fornax.yml line 3: integration.jenkins.server: 'ftp://x' must be an http(s) URL of a Jenkins server",
        "integration:\n  jenkins:\n    server: http://j\n    job: a/../b\n":
            "fornax.yml line 4: integration.jenkins.job: 'a/../b' must be a job name, or folder/…/job",
        "integration:\n  image: x\n  jenkins: {server: http://j, job: a}\n":
            "fornax.yml line 1: integration: `jenkins` runs the integration in Jenkins: image cannot be given "
            "with it",
        "integration:\n  commands: [x]\n":
            "fornax.yml line 1: integration: image: field required (or `jenkins`)",
    }
    for text, expected in cases.items():
        with pytest.raises(ConfigError) as info:
            parse_config(text)
        assert str(info.value) == expected


# -- Through the builder: the version's commit and name, the service's secrets, the version's log -----
@pytest.fixture(scope="module")
def builder_api(stack, store, jenkins):
    from shared.auth import create_user
    from tests.integration.builder_helpers import Api

    env = {"FORNAX_JENKINS_SERVERS": jenkins.url, "FORNAX_JENKINS_POLL_SECONDS": "0.1"}
    stack.start_service("projector")
    stack.start_service("gateway")
    stack.start_service("logstream")  # archives the log read below
    stack.stop("builder")  # only the instance allowed to reach the fake Jenkins may take the versions
    stack.start_service("builder", instance="builder-jenkins", env=env)
    user = "jk-" + str(time.monotonic_ns())[-8:]
    try:
        yield Api(stack.gateway_port, user, create_user(store, user))
    finally:
        stack.stop("builder-jenkins")
        stack.start_service("builder")


@pytest.mark.timeout(180)
def test_builder_runs_the_integration_in_jenkins(builder_api, jenkins, tmp_path) -> None:
    from tests.integration.builder_helpers import GitRepo
    from tests.waits import wait_until

    api = builder_api
    repo = GitRepo(tmp_path / "repo")
    commit = repo.commit({"fornax.yml": f"integration:\n  jenkins:\n    server: {jenkins.url}\n"
                                        "    job: team/app-tests\n"
                                        "    credentials: {user: JENKINS_USER, token: JENKINS_TOKEN}\n"})
    sid = api.create_service("jenkins-app", repo.url, secrets=SECRETS)["service_id"]
    vid = api.new_version(sid, "rel-1", operations=["integration"])
    version = api.wait_version(vid, timeout=120)
    assert version["status"] == "success", json.dumps(version)[:3000]
    build = next(b for b in jenkins.builds.values() if b.params.get("FORNAX_VERSION_ID") == vid)
    assert build.params["FORNAX_COMMIT"] == commit and build.params["FORNAX_VERSION"] == "rel-1"
    logs = wait_until(lambda: (r := api.http.get(f"/api/v1/{api.user}/versions/{vid}/logs")).status_code == 200
                      and "Checking out " + commit in r.text and "Jenkins result:" in r.text and r, 60,
                      "the archived log, to its last line (the archiver may lag the version's end)")
    assert "Jenkins result: SUCCESS" in logs.text and SECRETS["JENKINS_TOKEN"] not in logs.text

    repo.commit({"fornax.yml": f"integration:\n  jenkins:\n    server: {jenkins.url}\n    job: broken\n"
                               "    credentials: {user: JENKINS_USER, token: JENKINS_TOKEN}\n"})
    failed = api.wait_version(api.new_version(sid, "rel-2", operations=["integration"]), timeout=120)
    assert failed["status"] == "failed" and f"Jenkins {jenkins.url}: job 'broken' ended FAILURE" in str(failed)
