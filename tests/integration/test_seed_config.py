"""The seed's own example configuration (thesis Code 3.1, `caicloud.yml`) runs as written: a service
started with `command`, the step's `env`, and the repository mounted under GOPATH by `volumes` — with
its `golang:1.5` / `mongo:2.4` images replaced by local stand-ins (tests/fixtures/seed_images)."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from services.builder.pipeline import StageFailed, parse_config, run_stage
from tests.fixtures.seed_images import build_seed_images, remove_seed_images
from tests.integration.pipeline_helpers import MemoryLog, Versions
from tests.unit.test_pipeline_config import SEED_EXAMPLE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(busybox_image):
    c = docker.from_env()
    build_seed_images(c, busybox_image)
    yield c
    remove_seed_images(c)
    c.close()


@pytest.fixture
def versions(client, tmp_path: Path, settings):
    v = Versions(client, tmp_path, settings)
    yield v
    assert v.leaks() == []


@pytest.mark.timeout(120)
async def test_seed_example_config_runs(versions) -> None:
    config = parse_config(SEED_EXAMPLE, "caicloud.yml")
    log = MemoryLog()
    ctx = versions.context(log)
    (ctx.workspace / "main.go").write_text("package main\n\nfunc main() {}\n")
    await run_stage(ctx, config, "integration")
    text = "\n".join(log.texts("integration"))
    assert "$ godep go build -race ." in text
    assert "go: built /go/src/github.com/gaocegege/the-big-brother-is-watching-you as " \
           "../the-big-brother-is-watching-you" in text
    assert "mongo at mongo answered: pong from mongod" in text
    assert "[mongo] mongod: listening on 27017" in text


@pytest.mark.timeout(120)
async def test_volume_source_must_be_a_directory_of_the_repository(versions) -> None:
    config = parse_config("integration:\n  image: fornax/golang:1.5\n  volumes: ['src:/go/src/app']\n"
                          "  command: ls /go/src/app\n", "caicloud.yml")
    ctx = versions.context()
    (ctx.workspace / "src").symlink_to("/etc")
    with pytest.raises(StageFailed, match=r"integration: volumes\[0\]: src escapes the workspace"):
        await run_stage(ctx, config, "integration")
    (ctx.workspace / "src").unlink()
    (ctx.workspace / "src").mkdir()
    (ctx.workspace / "src" / "a.txt").write_text("x")
    log = MemoryLog()
    await run_stage(versions.context(log, version_id=ctx.version_id), config, "integration")
    assert "a.txt" in log.texts("integration")
