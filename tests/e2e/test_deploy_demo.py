"""`fornax demo` ends by deploying the demo version to the `local` Docker target and showing the app
answering on localhost (infra/demo/deploy.py: demo_step in infra/demo/build.py's AFTER_BUILD)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import docker
import pytest

from infra.demo import build as demo
from services.deployer.targets.docker_host import remove_app_networks
from tests.integration.builder_helpers import remove_images

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def services(stack, busybox_image) -> Iterator[object]:
    started = []
    for name in ("projector", "gateway", "builder", "deployer"):
        if name not in stack.procs or stack.procs[name].poll() is not None:
            stack.start_service(name)
            started.append(name)
    yield stack
    client = docker.from_env()
    mine = f"127.0.0.1:{stack.registry_port}/"  # (this session's registry: not another session's demo)
    for c in client.containers.list(all=True, filters={"label": "fornax.deploy.application=demo-app"}):
        if c.labels.get("fornax.deploy.image", "").startswith(mine):
            c.remove(force=True)
            if c.labels.get("fornax.deploy.service"):
                remove_app_networks(client, c.labels["fornax.deploy.service"])
    remove_images(f"127.0.0.1:{stack.registry_port}/demo")
    for name in reversed(started):
        stack.stop(name)


def test_demo_deploys_and_the_app_answers(services, capsys) -> None:
    saved = list(demo.AFTER_BUILD)
    demo.AFTER_BUILD[:] = [demo._deploy_to_local]  # as shipped (another test may have changed the list)
    try:
        assert demo.main(["--timeout", "120"]) == 0
    finally:
        demo.AFTER_BUILD[:] = saved
    out = capsys.readouterr().out
    assert "deploying to the local Docker engine" in out
    # named after the demo user too (`demo`, or `demo-<hex>` when that name was taken)
    assert re.search(r"container fornax-demo(-[0-9a-f]{6})?\.demo-app\.demo-app running", out), out
    answered = next(line for line in out.splitlines() if "answered HTTP" in line)
    assert answered.strip().startswith("http://127.0.0.1:")
    assert "HTTP 200: Hello from Fornax built from a commit" in answered
