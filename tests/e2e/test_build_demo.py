"""`fornax demo` against the test stack: builds, pushes and tags the sample repository; a second run
reuses the user and service and builds a new commit."""

from __future__ import annotations

import pytest

from infra.demo import build as demo
from tests.integration.builder_helpers import registry_tags, remove_images


@pytest.fixture(scope="module")
def services(stack, busybox_image):
    for name in ("projector", "gateway", "builder", "deployer"):  # the demo ends with a deploy
        stack.start_service(name)
    yield stack
    import docker

    from services.deployer.targets.docker_host import remove_app_networks

    client = docker.from_env()
    mine = f"127.0.0.1:{stack.registry_port}/"  # (this session's registry: not another session's demo)
    for c in client.containers.list(all=True, filters={"label": "fornax.deploy.application=demo-app"}):
        if c.labels.get("fornax.deploy.image", "").startswith(mine):
            c.remove(force=True)
            if c.labels.get("fornax.deploy.service"):
                remove_app_networks(client, c.labels["fornax.deploy.service"])
    remove_images(f"127.0.0.1:{stack.registry_port}/demo")


def test_demo_end_to_end(services, capsys) -> None:
    assert demo.main(["--timeout", "120"]) == 0
    out = capsys.readouterr().out
    image = next(line.split()[1] for line in out.splitlines() if line.startswith("image:"))
    assert image.startswith(f"127.0.0.1:{services.registry_port}/demo/demo-app:main-")
    assert (
        next(line for line in out.splitlines() if line.startswith("digest:")).split()[1].startswith("sha256:")
    )
    assert image.rsplit(":", 1)[1] in registry_tags(services.registry_port, "demo/demo-app")

    # Again: the same user and service, a new commit, a new version.
    seen = []
    demo.AFTER_BUILD.append(lambda d: seen.append(d.version["status"]))
    try:
        assert demo.main(["--timeout", "120"]) == 0
    finally:
        demo.AFTER_BUILD.clear()
    assert seen == ["success"]
    assert len(registry_tags(services.registry_port, "demo/demo-app")) == 2
